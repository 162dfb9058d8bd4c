"""Task table, TSV loading of every GLUE layout, error messages, custom tasks, datasets and collation.

All data is written to tmp dirs here, in the layout of the official GLUE files (headers copied from them;
sentences made up or abridged).
"""

import pytest
import torch
from torch.utils.data import DataLoader

import mosaicbert.finetune.tsv as tsv
from mosaicbert.errors import RecipeError
from mosaicbert.finetune.data import ClassificationCollator, ClassificationDataset
from mosaicbert.finetune.tasks import GLUE_TASKS, TaskSpec, get_task
from mosaicbert.finetune.tsv import load_task_split, load_task_splits

MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                     "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
                   "label4\tlabel5\tgold_label")
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"


def _mnli_row(i, premise, hypothesis, gold, dev=False):
    votes = [gold] * (5 if dev else 1)
    return "\t".join([str(i), "1", f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)",
                      premise, hypothesis, *votes, gold])


# GLUE folder -> file -> lines. Quotes are deliberately unbalanced: GLUE files are not CSV-quoted.
GLUE_FILES = {
    "SST-2": {
        "train.tsv": ["sentence\tlabel", 'hide new secretions from the parental units \t0',
                      '"a gorgeous , witty , seductive movie . \t1', 'the " worst \t0'],
        "dev.tsv": ["sentence\tlabel", "it 's a charming and often affecting journey . \t1"],
    },
    "CoLA": {  # no header: source, label, original author's mark, sentence
        "train.tsv": ["gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.",
                      "gj04\t0\t*\tThey drank the pub."],
        "dev.tsv": ["gj04\t1\t\tThe sailors rode the breeze clear of the rocks.",
                    "gj04\t0\t*\tThe more we study verbs, the crazier they get get."],
    },
    "MRPC": {  # the official files start with a UTF-8 byte-order mark
        "train.tsv": ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                      '1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as only " the witness " .',
                      "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 ."],
        "dev.tsv": ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                    "1\t1355540\t1355592\tHe said the foodservice pie .\tThe foodservice pie business ."],
    },
    "QQP": {
        "train.tsv": ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                      "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration?\t0",
                      "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1"],
        "dev.tsv": ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                    "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0"],
    },
    "STS-B": {
        "train.tsv": [STSB_HEADER,
                      "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000",
                      "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\tA man is playing a bamboo flute.\t3.800"],
        "dev.tsv": [STSB_HEADER,
                    "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t5.000"],
    },
    "MNLI": {
        "train.tsv": [MNLI_TRAIN_HEADER,
                      _mnli_row(0, "Conceptually cream skimming has two basic dimensions .",
                                "Product and geography are what make cream skimming work .", "neutral"),
                      _mnli_row(1, "you know during the season", "You lose the things .", "entailment")],
        "dev_matched.tsv": [MNLI_DEV_HEADER,
                            _mnli_row(0, "The new rights are nice enough", "Everyone really likes the newest benefits",
                                      "neutral", dev=True),
                            _mnli_row(1, "This site includes a list", "The Government Executive articles",
                                      "contradiction", dev=True)],
        "dev_mismatched.tsv": [MNLI_DEV_HEADER,
                               _mnli_row(0, "Your contribution helped make it possible",
                                         "Your contributions were of no help", "contradiction", dev=True)],
    },
    "QNLI": {
        "train.tsv": ["index\tquestion\tsentence\tlabel",
                      "0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it .\tnot_entailment",
                      "1\tWhich missile batteries often have individual launchers?\tThe missile batteries .\tentailment"],
        "dev.tsv": ["index\tquestion\tsentence\tlabel",
                    "0\tWhat came into force after the new constitution?\tThe Constitution came into force .\tentailment"],
    },
    "RTE": {
        "train.tsv": ["index\tsentence1\tsentence2\tlabel",
                      "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\tnot_entailment"],
        "dev.tsv": ["index\tsentence1\tsentence2\tlabel",
                    "0\tDana Reeve, the widow of the actor, died .\tChristopher Reeve had an accident.\tnot_entailment",
                    "1\tYet, we now are discovering .\tBacteria is winning the war .\tentailment"],
    },
}

# task -> (split -> expected rows)
EXPECTED = {
    "sst2": {"train": [{"sentence": "hide new secretions from the parental units ", "label": 0},
                       {"sentence": '"a gorgeous , witty , seductive movie . ', "label": 1},
                       {"sentence": 'the " worst ', "label": 0}],
             "validation": [{"sentence": "it 's a charming and often affecting journey . ", "label": 1}]},
    "cola": {"train": [{"sentence": "Our friends won't buy this analysis, let alone the next one we propose.",
                        "label": 1},
                       {"sentence": "They drank the pub.", "label": 0}],
             "validation": [{"sentence": "The sailors rode the breeze clear of the rocks.", "label": 1},
                            {"sentence": "The more we study verbs, the crazier they get get.", "label": 0}]},
    "mrpc": {"train": [{"#1 String": "Amrozi accused his brother .",
                        "#2 String": 'Referring to him as only " the witness " .', "label": 1},
                       {"#1 String": "Yucaipa owned Dominick 's .",
                        "#2 String": "Yucaipa bought Dominick 's in 1995 .", "label": 0}],
             "validation": [{"#1 String": "He said the foodservice pie .",
                             "#2 String": "The foodservice pie business .", "label": 1}]},
    "qqp": {"train": [{"question1": "How is the life of a math student?",
                       "question2": "Which level of prepration?", "label": 0},
                      {"question1": "How do I control my horny emotions?",
                       "question2": "How do you control your horniness?", "label": 1}],
            "validation": [{"question1": "Why are African-Americans so beautiful?",
                            "question2": "Why are hispanics so beautiful?", "label": 0}]},
    "stsb": {"train": [{"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.",
                        "label": 5.0},
                       {"sentence1": "A man is playing a flute.", "sentence2": "A man is playing a bamboo flute.",
                        "label": 3.8}],
             "validation": [{"sentence1": "A man with a hard hat is dancing.",
                             "sentence2": "A man wearing a hard hat is dancing.", "label": 5.0}]},
    "mnli": {"train": [{"sentence1": "Conceptually cream skimming has two basic dimensions .",
                        "sentence2": "Product and geography are what make cream skimming work .", "label": 1},
                       {"sentence1": "you know during the season", "sentence2": "You lose the things .",
                        "label": 0}],
             "validation_matched": [{"sentence1": "The new rights are nice enough",
                                     "sentence2": "Everyone really likes the newest benefits", "label": 1},
                                    {"sentence1": "This site includes a list",
                                     "sentence2": "The Government Executive articles", "label": 2}],
             "validation_mismatched": [{"sentence1": "Your contribution helped make it possible",
                                        "sentence2": "Your contributions were of no help", "label": 2}]},
    "qnli": {"train": [{"question": "When did the third Digimon series begin?",
                        "sentence": "Unlike the two seasons before it .", "label": 1},
                       {"question": "Which missile batteries often have individual launchers?",
                        "sentence": "The missile batteries .", "label": 0}],
             "validation": [{"question": "What came into force after the new constitution?",
                             "sentence": "The Constitution came into force .", "label": 0}]},
    "rte": {"train": [{"sentence1": "No Weapons of Mass Destruction Found in Iraq Yet.",
                       "sentence2": "Weapons of Mass Destruction Found in Iraq.", "label": 1}],
            "validation": [{"sentence1": "Dana Reeve, the widow of the actor, died .",
                            "sentence2": "Christopher Reeve had an accident.", "label": 1},
                           {"sentence1": "Yet, we now are discovering .",
                            "sentence2": "Bacteria is winning the war .", "label": 0}]},
}


def write_lines(path, lines, newline="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode("utf-8"))
    return path


@pytest.fixture()
def glue_dir(tmp_path):
    """A GLUE-layout folder with tiny files for all eight tasks."""
    for folder, files in GLUE_FILES.items():
        for name, lines in files.items():
            write_lines(tmp_path / "glue" / folder / name, lines)
    return tmp_path / "glue"


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Tests never touch the network: the hub counts as unreachable unless a test says otherwise."""
    monkeypatch.setattr(tsv, "hub_reachable", lambda: False)


def custom(**overrides):
    d = {"name": "reviews", "text_columns": ["sentence"], "label_column": "label", "num_labels": 2}
    d.update(overrides)
    return d


# ----------------------------------------------------------------------------------------------------
# Task table
# ----------------------------------------------------------------------------------------------------

def test_glue_table_covers_the_eight_tasks():
    assert set(GLUE_TASKS) == {"mnli", "qnli", "qqp", "rte", "sst2", "mrpc", "cola", "stsb"}
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert GLUE_TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["qnli"].hf_text_columns == ("question", "sentence")
    assert not GLUE_TASKS["sst2"].is_pair and GLUE_TASKS["mrpc"].is_pair
    assert get_task("rte") is GLUE_TASKS["rte"]
    with pytest.raises(RecipeError, match="Unknown task 'wnli'"):
        get_task("wnli")


# ----------------------------------------------------------------------------------------------------
# Loading each GLUE layout
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task_name", sorted(EXPECTED))
def test_load_every_glue_layout(glue_dir, task_name):
    task = GLUE_TASKS[task_name]
    assert load_task_splits(task, glue_dir) == EXPECTED[task_name]
    label_type = float if task.is_regression else int
    for rows in EXPECTED[task_name].values():
        assert all(type(row["label"]) is label_type for row in rows)


def test_crlf_line_endings_and_blank_lines(tmp_path):
    lines = ["sentence\tlabel", "good\t1", "", "a stray\rreturn\t1", "bad\t0", ""]
    write_lines(tmp_path / "SST-2" / "train.tsv", lines, newline="\r\n")
    rows = load_task_split(GLUE_TASKS["sst2"], tmp_path, "train")
    assert rows == [{"sentence": "good", "label": 1}, {"sentence": "a stray\rreturn", "label": 1},
                    {"sentence": "bad", "label": 0}]


def test_eval_rows_without_label_are_skipped(tmp_path):
    task = TaskSpec.from_dict(custom(data_dir=str(tmp_path), eval_files=["dev.tsv", "test.tsv"]))
    write_lines(tmp_path / "test.tsv", ["sentence\tlabel", "fine\t1", "unlabelled\t", "bad\t0"])
    assert load_task_split(task, None, "test") == [{"sentence": "fine", "label": 1},
                                                   {"sentence": "bad", "label": 0}]
    write_lines(tmp_path / "train.tsv", ["sentence\tlabel", "fine\t1", "unlabelled\t"])
    with pytest.raises(RecipeError, match=r"train\.tsv, line 3: the label column 'label' is empty"):
        load_task_split(task, None, "train")
    write_lines(tmp_path / "train.tsv", ["sentence\tlabel", "fine\t1", "\t", "bad\t0"])  # a row of empty fields
    with pytest.raises(RecipeError, match=r"train\.tsv, line 3: the label column 'label' is empty"):
        load_task_split(task, None, "train")
    write_lines(tmp_path / "dev.tsv", ["sentence\tlabel", "unlabelled\t"])
    with pytest.raises(RecipeError, match="has no labelled rows"):
        load_task_split(task, None, "dev")


# ----------------------------------------------------------------------------------------------------
# Errors a user can fix
# ----------------------------------------------------------------------------------------------------

def test_missing_glue_file_names_path_and_both_fixes(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_task_split(GLUE_TASKS["mnli"], tmp_path, "validation_mismatched")
    message = str(err.value)
    assert str(tmp_path / "MNLI" / "dev_mismatched.tsv") in message
    assert "set data_dir to a folder in the GLUE TSV layout" in message
    assert "leave data_dir unset with the Hugging Face hub reachable" in message


def test_no_data_dir_and_no_hub(monkeypatch):
    with pytest.raises(RecipeError) as err:
        load_task_split(GLUE_TASKS["sst2"], None, "train")
    message = str(err.value)
    assert "data_dir is unset and the Hugging Face hub cannot be reached" in message
    assert "SST-2/train.tsv" in message and "reaches the Hugging Face hub" in message


def test_missing_custom_file_and_folder(tmp_path):
    task = TaskSpec.from_dict(custom())
    with pytest.raises(RecipeError, match="has no data folder"):
        load_task_split(task, None, "train")
    with pytest.raises(RecipeError, match=f"file not found: {tmp_path / 'dev.tsv'}"):
        load_task_split(task, tmp_path, "dev")


def test_unknown_split(glue_dir):
    with pytest.raises(RecipeError, match=r"no split 'validation'.*validation_matched"):
        load_task_split(GLUE_TASKS["mnli"], glue_dir, "validation")


@pytest.mark.parametrize("lines, expected", [
    ([], "is empty"),
    (["sentence\tlabel"], r"has a header \(\['sentence', 'label'\]\) but no data rows"),
])
def test_empty_files(tmp_path, lines, expected):
    write_lines(tmp_path / "SST-2" / "train.tsv", lines)
    with pytest.raises(RecipeError, match=expected):
        load_task_split(GLUE_TASKS["sst2"], tmp_path, "train")


def test_empty_headerless_file(tmp_path):
    write_lines(tmp_path / "CoLA" / "dev.tsv", [])
    with pytest.raises(RecipeError, match=r"dev\.tsv is empty"):
        load_task_split(GLUE_TASKS["cola"], tmp_path, "validation")


def test_missing_column_names_column_and_header(tmp_path):
    write_lines(tmp_path / "SST-2" / "train.tsv", ["text\tlabel", "good\t1"])
    with pytest.raises(RecipeError, match=r"column 'sentence' not found; the header has \['text', 'label'\]"):
        load_task_split(GLUE_TASKS["sst2"], tmp_path, "train")
    # A GLUE test file has no label column at all.
    write_lines(tmp_path / "QNLI" / "dev.tsv", ["index\tquestion\tsentence", "0\tq?\ts."])
    with pytest.raises(RecipeError, match="column 'label' not found"):
        load_task_split(GLUE_TASKS["qnli"], tmp_path, "validation")


def test_label_out_of_range(tmp_path):
    path = write_lines(tmp_path / "SST-2" / "train.tsv", ["sentence\tlabel", "good\t1", "odd\t2"])
    with pytest.raises(RecipeError) as err:
        load_task_split(GLUE_TASKS["sst2"], tmp_path, "train")
    assert f"{path}, line 3: label '2' in column 'label' is out of range; allowed values: integers 0..1" \
        in str(err.value)


def test_label_not_an_integer(tmp_path):
    write_lines(tmp_path / "QQP" / "train.tsv", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                                                 "1\t2\t3\ta?\tb?\tyes"])
    with pytest.raises(RecipeError, match=r"line 2: label 'yes' in column 'is_duplicate' is not an integer; "
                                        r"allowed values: integers 0\.\.1"):
        load_task_split(GLUE_TASKS["qqp"], tmp_path, "train")


def test_unknown_label_string(tmp_path):
    lines = [MNLI_DEV_HEADER, _mnli_row(0, "a", "b", "neutral", dev=True),
             _mnli_row(1, "c", "d", "entails", dev=True)]
    path = write_lines(tmp_path / "MNLI" / "dev_matched.tsv", lines)
    with pytest.raises(RecipeError) as err:
        load_task_split(GLUE_TASKS["mnli"], tmp_path, "validation_matched")
    assert (f"{path}, line 3: label 'entails' in column 'gold_label' is unknown; allowed values: "
            "'entailment', 'neutral', 'contradiction'") in str(err.value)


def test_regression_label_not_a_number(tmp_path):
    write_lines(tmp_path / "STS-B" / "train.tsv",
                [STSB_HEADER, "0\tg\tf\ty\t1\tn\tn\tA.\tB.\tnan"])
    with pytest.raises(RecipeError, match="line 2: label 'nan' in column 'score' is not a finite number"):
        load_task_split(GLUE_TASKS["stsb"], tmp_path, "train")


@pytest.mark.parametrize("bad_line, found", [("a tab\tinside\t1", 3), ("no label field", 1)])
def test_wrong_field_count(tmp_path, bad_line, found):
    path = write_lines(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", "good\t1", bad_line])
    with pytest.raises(RecipeError) as err:
        load_task_split(GLUE_TASKS["sst2"], tmp_path, "validation")
    assert f"{path}, line 3: expected 2 tab-separated fields (as in the header) but found {found}" \
        in str(err.value)


def test_headerless_wrong_field_count(tmp_path):
    write_lines(tmp_path / "CoLA" / "train.tsv", ["gj04\t1\t\tFine.", "gj04\t0\tThey drank the pub."])
    with pytest.raises(RecipeError, match=r"line 2: expected 4 tab-separated fields \(as in column_names\)"):
        load_task_split(GLUE_TASKS["cola"], tmp_path, "train")


def test_invalid_utf8(tmp_path):
    path = tmp_path / "SST-2" / "train.tsv"
    path.parent.mkdir()
    path.write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    with pytest.raises(RecipeError, match="line 2: not valid UTF-8"):
        load_task_split(GLUE_TASKS["sst2"], tmp_path, "train")


# ----------------------------------------------------------------------------------------------------
# Hugging Face hub path (datasets.load_dataset replaced by an in-memory dataset)
# ----------------------------------------------------------------------------------------------------

def test_hub_rows_use_the_tsv_column_names(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"],
                                           "label": [2, -1, 0], "idx": [0, 1, 2]})

    monkeypatch.setattr(tsv, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_task_split(GLUE_TASKS["mnli"], None, "validation_mismatched")
    assert calls == [("glue", "mnli", "validation_mismatched")]
    assert rows == [{"sentence1": "p1", "sentence2": "h1", "label": 2},  # label -1 (unlabelled) dropped
                    {"sentence1": "p3", "sentence2": "h3", "label": 0}]


def test_hub_failure_is_a_recipe_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def failing_load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'glue' on the Hub\nmore detail")

    monkeypatch.setattr(tsv, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", failing_load_dataset)
    expected = (r"\(ConnectionError: Couldn't reach 'glue' on the Hub\)\. "
                r"Fix: either set data_dir to a folder in the GLUE TSV layout")
    with pytest.raises(RecipeError, match=expected):
        load_task_split(GLUE_TASKS["rte"], None, "train")


# ----------------------------------------------------------------------------------------------------
# Custom tasks
# ----------------------------------------------------------------------------------------------------

def test_custom_task_from_dict_and_load(tmp_path):
    write_lines(tmp_path / "train.tsv", ["sentence\tlabel", 'a "great" film\tfresh', "dull\trotten"])
    write_lines(tmp_path / "dev.tsv", ["sentence\tlabel", "fine\tfresh"])
    write_lines(tmp_path / "test.tsv", ["sentence\tlabel", "meh\trotten"])
    task = TaskSpec.from_dict(custom(data_dir=str(tmp_path), eval_files=["dev.tsv", "test.tsv"],
                                     label_names=["rotten", "fresh"], metrics=["accuracy", "f1"]))
    assert task.eval_files == {"dev": "dev.tsv", "test": "test.tsv"}
    assert task.metrics == ("accuracy", "f1") and task.has_header and not task.is_pair
    assert load_task_splits(task, None) == {
        "train": [{"sentence": 'a "great" film', "label": 1}, {"sentence": "dull", "label": 0}],
        "dev": [{"sentence": "fine", "label": 1}],
        "test": [{"sentence": "meh", "label": 0}],
    }
    write_lines(tmp_path / "dev.tsv", ["sentence\tlabel", "fine\t1"])
    with pytest.raises(RecipeError, match="label '1' in column 'label' is unknown.*leave label_names out"):
        load_task_split(task, None, "dev")


def test_custom_headerless_pair_regression(tmp_path):
    write_lines(tmp_path / "pairs.tsv", ["x\ty\t0.5", "u\tv\t-1.25"])
    task = TaskSpec.from_dict({"name": "sim", "text_columns": ["a", "b"], "label_column": "score",
                               "num_labels": 1, "has_header": False, "column_names": ["a", "b", "score"],
                               "train_file": "pairs.tsv", "eval_files": {"held_out": "pairs.tsv"}})
    assert task.metrics == ("pearson", "spearman") and task.is_pair
    assert load_task_split(task, tmp_path, "held_out") == [{"a": "x", "b": "y", "label": 0.5},
                                                           {"a": "u", "b": "v", "label": -1.25}]


def test_custom_header_mismatch_hints_at_has_header(tmp_path):
    write_lines(tmp_path / "train.tsv", ["Great movie\t1"])
    with pytest.raises(RecipeError, match="has_header: false"):
        load_task_split(TaskSpec.from_dict(custom()), tmp_path, "train")


@pytest.mark.parametrize("overrides, key", [
    ({"colour": "red"}, "colour"),
    ({"num_labels": 0}, "num_labels"),
    ({"num_labels": True}, "num_labels"),
    ({"num_labels": None}, "num_labels"),
    ({"text_columns": ["a", "b", "c"]}, "text_columns"),
    ({"text_columns": []}, "text_columns"),
    ({"text_columns": ["a", "a"]}, "text_columns"),
    ({"text_columns": ["label"], "label_column": "y"}, "text_columns"),
    ({"label_column": "sentence"}, "label_column"),
    ({"label_column": 3}, "label_column"),
    ({"label_names": ["only_one"]}, "label_names"),
    ({"label_names": ["a", "b"], "num_labels": 1}, "label_names"),
    ({"metrics": ["bleu"]}, "metrics"),
    ({"metrics": ["pearson"]}, "metrics"),
    ({"metrics": ["f1"], "num_labels": 3}, "metrics"),
    ({"has_header": "no"}, "has_header"),
    ({"has_header": False}, "column_names"),
    ({"has_header": False, "column_names": ["sentence"]}, "column_names"),
    ({"column_names": ["sentence", "label"]}, "column_names"),
    ({"eval_files": ["train.tsv"]}, "eval_files"),
    ({"eval_files": 3}, "eval_files"),
    ({"train_file": ""}, "train_file"),
    ({"data_dir": 5}, "data_dir"),
    ({"name": "sst2"}, "name"),
])
def test_custom_task_validation_names_the_bad_key(overrides, key):
    with pytest.raises(RecipeError, match=f"key '{key}'"):
        TaskSpec.from_dict(custom(**overrides))


def test_custom_task_without_name_or_not_a_mapping():
    with pytest.raises(RecipeError, match="no valid 'name'"):
        TaskSpec.from_dict({"text_columns": ["s"], "label_column": "label", "num_labels": 2})
    with pytest.raises(RecipeError, match="must be a mapping"):
        TaskSpec.from_dict(["name", "x"])


# ----------------------------------------------------------------------------------------------------
# Tokenized datasets and collation
# ----------------------------------------------------------------------------------------------------

def test_single_sentence_dataset_and_collate(glue_dir, tokenizer):
    rows = load_task_split(GLUE_TASKS["sst2"], glue_dir, "train")
    dataset = ClassificationDataset(rows, GLUE_TASKS["sst2"], tokenizer, max_seq_len=16)
    assert len(dataset) == 3
    item = dataset[2]  # 'the " worst '
    tokens = tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    assert tokens == ["[CLS]", "the", '"', "worst", "[SEP]"]
    assert item["token_type_ids"].tolist() == [0] * 5 and item["attention_mask"].tolist() == [1] * 5
    assert item["labels"].dtype == torch.long and item["labels"].item() == 0

    batch = ClassificationCollator.for_tokenizer(tokenizer)([dataset[i] for i in range(3)])
    longest = int(dataset.lengths.max())
    assert {k: tuple(v.shape) for k, v in batch.items() if k != "row_lengths"} == {
        "input_ids": (3, longest), "attention_mask": (3, longest), "token_type_ids": (3, longest),
        "labels": (3,)}
    assert batch["row_lengths"] == batch["attention_mask"].sum(1).tolist()
    assert batch["labels"].tolist() == [0, 1, 0]
    assert batch["attention_mask"][2].tolist() == [1] * 5 + [0] * (longest - 5)
    assert batch["input_ids"][2, 5:].eq(tokenizer.pad_token_id).all()


def test_pair_dataset_segments_and_truncation(tokenizer):
    task = GLUE_TASKS["rte"]
    rows = [{"sentence1": "hello world", "sentence2": "good morning", "label": 0},
            {"sentence1": "one " * 40, "sentence2": "two " * 5, "label": 1}]
    dataset = ClassificationDataset(rows, task, tokenizer, max_seq_len=16)
    item = dataset[0]
    assert tokenizer.convert_ids_to_tokens(item["input_ids"].tolist()) == [
        "[CLS]", "hello", "world", "[SEP]", "good", "morning", "[SEP]"]
    assert item["token_type_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1]  # second segment and its [SEP] are 1

    long_item = dataset[1]  # longest_first trims the long first segment, keeping all of the second
    tokens = tokenizer.convert_ids_to_tokens(long_item["input_ids"].tolist())
    assert len(tokens) == 16 and tokens.count("two") == 5 and tokens.count("one") == 8
    assert long_item["token_type_ids"].tolist() == [0] * 10 + [1] * 6


def test_collate_to_max_seq_len_through_a_dataloader(tokenizer):
    task = GLUE_TASKS["stsb"]
    rows = [{"sentence1": "a man sings", "sentence2": "a man is singing", "label": 4.2},
            {"sentence1": "a cat", "sentence2": "a dog", "label": 0.5}]
    dataset = ClassificationDataset(rows, task, tokenizer, max_seq_len=32)
    collate = ClassificationCollator(tokenizer.pad_token_id, pad_to=32)
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (2, 32) and batch["input_ids"].dtype == torch.long
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == pytest.approx([4.2, 0.5])
    assert batch["attention_mask"].sum(dim=1).tolist() == dataset.lengths.tolist()
    # padding never marks tokens as second segment
    assert batch["token_type_ids"][:, int(dataset.lengths.max()):].eq(0).all()


def test_dataset_rejects_tiny_max_seq_len(tokenizer):
    with pytest.raises(RecipeError, match="max_seq_len=3 leaves no room"):
        ClassificationDataset([], GLUE_TASKS["rte"], tokenizer, max_seq_len=3)


def test_mosaic_classifier_batches_unpad_without_nonzero(tokenizer, monkeypatch):
    """The collator's host-side row lengths reach the model, so unpadding never calls torch.nonzero."""
    from mosaicbert.composer_models import ComposerClassifier
    from mosaicbert.model import MosaicBertConfig, MosaicBertForSequenceClassification

    rows = [{"sentence": text, "label": i % 2} for i, text in enumerate(
        ["a short one", "a somewhat longer sentence than the first", "x", "two words"])]
    dataset = ClassificationDataset(rows, get_task("sst2"), tokenizer, max_seq_len=16)
    batch = ClassificationCollator.for_tokenizer(tokenizer)([dataset[i] for i in range(4)])
    assert batch["row_lengths"] == batch["attention_mask"].sum(1).tolist()
    config = MosaicBertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=32, num_labels=2)
    model = ComposerClassifier(MosaicBertForSequenceClassification(config).eval(), metrics={})
    with torch.no_grad():
        expected = model(batch).logits
        without_sizes = {k: v for k, v in batch.items() if k != "row_lengths"}

        def forbidden(*args, **kwargs):
            raise AssertionError("torch.nonzero (a device sync) was called")

        monkeypatch.setattr(torch, "nonzero", forbidden)
        torch.testing.assert_close(model(batch).logits, expected)
        with pytest.raises(AssertionError, match="device sync"):
            model(without_sizes)


def test_a_custom_tasks_own_folder_wins_over_the_runs_data_dir(tmp_path):
    own, run_level = tmp_path / "own", tmp_path / "glue_root"
    assert tsv.task_folder(TaskSpec.from_dict(custom(data_dir=str(own))), str(run_level)) == own
    assert tsv.task_folder(TaskSpec.from_dict(custom()), str(run_level)) == run_level
