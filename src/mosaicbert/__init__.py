"""MosaicBERT pretraining recipe on Composer."""
