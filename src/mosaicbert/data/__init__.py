"""Pretraining data: text to MDS shards (``convert``), the streaming text dataset and its dataloader
(``text_dataset``), masked-LM batches (``mlm_collator``)."""
