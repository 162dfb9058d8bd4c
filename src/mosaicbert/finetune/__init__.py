"""Fine-tuning on GLUE and custom TSV tasks (``glue.py``); :mod:`.runner` describes the flow and the modules."""
