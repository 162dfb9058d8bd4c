"""Looking at results: metric logs (``metrics_log``), time to quality (``time_to_quality``) and plots
(``plots``). Nothing here is needed to train."""
