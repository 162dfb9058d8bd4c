"""The offline demo: a pretraining corpus made from the installed packages' documentation
(``corpus``) and a small labelled task made from it (``task``)."""
