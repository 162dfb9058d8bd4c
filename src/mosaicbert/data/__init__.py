"""Pretraining data: text to MDS shards (``convert``), the streaming text dataset and its dataloader
(``text_dataset``), checks of an MDS folder (``mds_check``), masked-LM batches (``mlm_collator``)."""
