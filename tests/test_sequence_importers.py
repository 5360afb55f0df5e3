"""Importers for order-only sequence layouts: RecBole atomic files (plain and UniSRec split) and
X.inter.json + X.item.json. The leave-last-out split on an imported folder tests the files' own
test targets."""

from __future__ import annotations

import json
from datetime import datetime

import polars as pl
import pytest

from recsys import windows
from recsys.cli import main
from recsys.config import PipelineConfig
from recsys.dataset import load_folder
from recsys.errors import DataValidationError
from recsys.importers.ordered import SEQUENCE_END
from recsys.importers.recbole import import_recbole
from recsys.importers.sequences import import_sequences
from recsys.split import split_interactions

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def write_unisrec(folder, *, train: str | None = None, valid: str = "u1\ta b\tc\nu2\tx\ty\n",
                  test: str = "u1\ta b c\td\nu2\tx y\tz\n", text: str | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    if train is not None:
        (folder / "G.train.inter").write_text(HEADER + train)
    (folder / "G.valid.inter").write_text(HEADER + valid)
    (folder / "G.test.inter").write_text(HEADER + test)
    (folder / "G.text").write_text(text if text is not None else
                                   "item_id:token\ttext:token_seq\na\tAlpha &amp; Co\nb\tBeta\nc\tGamma\n"
                                   "d\tDelta\nx\tEx\ny\tWhy\nz\tZed\n")
    return folder


def sequences_of(interactions: pl.DataFrame) -> dict[str, list[str]]:
    ordered = interactions.sort("timestamp", maintain_order=True)
    return {u: ordered.filter(pl.col("user_id") == u)["item_id"].to_list()
            for u in ordered["user_id"].unique().sort()}


def test_unisrec_split_files_merge_into_one_ordered_sequence_per_user(tmp_path):
    tables, report = import_recbole(write_unisrec(tmp_path / "g"))
    inter = tables["interactions"]
    assert sequences_of(inter) == {"u1": ["a", "b", "c", "d"], "u2": ["x", "y", "z"]}
    # one day per step, every sequence ending on the same day
    last = inter.group_by("user_id").agg(pl.col("timestamp").max())["timestamp"].unique().to_list()
    assert last == [SEQUENCE_END]
    assert inter.filter(pl.col("user_id") == "u1")["timestamp"].to_list()[0] == datetime(2019, 12, 29)
    assert tables["items"].filter(pl.col("item_id") == "a")["title"].item() == "Alpha & Co"
    assert (report["layout"], report["order_only"], report["n_test_targets"]) == ("recbole-unisrec", True, 2)
    assert "--split leave-last-out" in report["timestamps"]


def test_train_rows_and_capped_histories_merge(tmp_path):
    # train has every prefix; the test row's history lost its oldest item to a length cap
    src = write_unisrec(tmp_path / "g", train="u1\ta\tb\nu1\ta b\tc\n", valid="u1\ta b\tc\n",
                        test="u1\tb c\td\n", text="item_id:token\ttitle:token_seq\na\tA\n")
    tables, report = import_recbole(src)
    assert sequences_of(tables["interactions"]) == {"u1": ["a", "b", "c", "d"]}
    # items missing from the text file stay, with empty text, and are counted
    assert report["items_without_text_row"] == 3
    assert tables["items"].filter(pl.col("item_id") == "d")["title"].item() == ""


def test_a_row_that_contradicts_the_order_names_its_line(tmp_path):
    src = write_unisrec(tmp_path / "g", valid="u1\ta b\tc\n", test="u1\ta x c\td\n")
    with pytest.raises(DataValidationError, match=r"G\.test\.inter:2: user 'u1': this row's history does not "
                                                  r"continue the sequence"):
        import_recbole(src)


@pytest.mark.parametrize(("test", "message"), [
    ("u1\ta b c\n", r"G\.test\.inter:2: expected 3 tab-separated fields, found 2"),
    ("u1\ta b c\td\nu1\ta b c\td\n", r"G\.test\.inter:3: user 'u1' has a second test row"),
    ("", r"G\.test\.inter: the file has no data lines \(it is empty or only a header\)"),
])
def test_malformed_split_files_name_file_and_line(tmp_path, test, message):
    with pytest.raises(DataValidationError, match=message):
        import_recbole(write_unisrec(tmp_path / "g", valid="u1\ta b\tc\n", test=test))


def test_untyped_header_and_mixed_layouts_are_refused(tmp_path):
    src = write_unisrec(tmp_path / "g")
    (src / "G.valid.inter").write_text("user_id\titem_id_list\titem_id\nu1\ta b\tc\n")
    with pytest.raises(DataValidationError, match=r"G\.valid\.inter:1: header column 'user_id' is not name:type"):
        import_recbole(src)
    other = write_unisrec(tmp_path / "two")
    (other / "H.inter").write_text("user_id:token\titem_id:token\nu\ta\n")
    with pytest.raises(DataValidationError, match=r"expected the files of one RecBole data set .*G\.test\.inter, "
                                                  r"G\.valid\.inter, H\.inter"):
        import_recbole(other)


def test_plain_atomic_inter_keeps_ratings_and_real_times(tmp_path):
    src = tmp_path / "ml"
    src.mkdir()
    (src / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                  "1\t10\t4\t881250949\n1\t20\t3\t881250950.0\n")
    (src / "ml.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\tbrand:token\n"
                                 "10\tToy Story\tAnimation Comedy\tPixar\n20\tHeat\tCrime\t\n")
    tables, report = import_recbole(src)
    inter = tables["interactions"]
    assert inter["weight"].to_list() == [4.0, 3.0]
    assert inter["timestamp"][0] == datetime(1997, 12, 4, 15, 55, 49)
    toy = tables["items"].row(0, named=True)
    assert (toy["title"], toy["category"], toy["description"]) == ("Toy Story", "Animation Comedy", "Brand: Pixar.")
    assert (report["layout"], report["order_only"]) == ("recbole-atomic", False)
    (src / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\tsoon\n")
    with pytest.raises(DataValidationError, match=r"ml\.inter:2: column 'timestamp': cannot parse 'soon'"):
        import_recbole(src)


def test_plain_atomic_inter_without_times_keeps_each_users_file_order_and_weights(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "s.inter").write_text("user_id:token\titem_id:token\trating:float\n"
                                 "u2\tq\t1\nu1\tb\t5\nu2\tp\t2\nu1\ta\t3\n")
    tables, report = import_recbole(src)
    inter = tables["interactions"].sort("timestamp", maintain_order=True)
    assert sequences_of(inter) == {"u1": ["b", "a"], "u2": ["q", "p"]}
    assert dict(zip(inter["item_id"], inter["weight"], strict=True)) == {"q": 1.0, "b": 5.0, "p": 2.0, "a": 3.0}
    assert report["order_only"] is True


def write_json_sequences(folder, inter: object = None, items: object = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "O.inter.json").write_text(json.dumps(inter if inter is not None else {"0": [0, 1, 2], "1": [2, 3]}))
    (folder / "O.item.json").write_text(json.dumps(items if items is not None else {
        "0": {"title": "Phone", "description": "A  phone", "brand": "VTech", "categories": "Office, Phones"},
        "1": {"title": "Toner &amp; ink", "description": "", "brand": "", "categories": ["Office", "Ink"]},
        "2": {"title": "Paper"}, "3": {"title": "Pen", "description": None}}))
    return folder


def test_json_sequences_import_in_order_with_brand_and_categories(tmp_path):
    tables, report = import_sequences(write_json_sequences(tmp_path / "o"))
    assert sequences_of(tables["interactions"]) == {"0": ["0", "1", "2"], "1": ["2", "3"]}
    items = {r["item_id"]: r for r in tables["items"].iter_rows(named=True)}
    assert items["0"]["description"] == "Brand: VTech. A phone"
    assert (items["1"]["title"], items["1"]["category"]) == ("Toner & ink", "Office, Ink")
    assert items["2"]["category"] == "unknown"
    assert (report["n_users"], report["n_interactions"], report["order_only"]) == (2, 5, True)


@pytest.mark.parametrize(("inter", "items", "message"), [
    ({"0": [0, [1]]}, None, r"O\.inter\.json: user '0': expected a list of item ids"),
    ({"0": []}, None, r"O\.inter\.json: no user has an item"),
    ([[0, 1]], None, r"O\.inter\.json: expected an object of user id -> list of item ids in order, found a JSON list"),
    (None, {"0": {"title": 5}}, r"O\.item\.json: item '0': 'title' must be text, found 5"),
])
def test_malformed_json_sequences_are_refused(tmp_path, inter, items, message):
    with pytest.raises(DataValidationError, match=message):
        import_sequences(write_json_sequences(tmp_path / "o", inter, items))


def test_json_that_does_not_parse_names_the_line(tmp_path):
    src = write_json_sequences(tmp_path / "o")
    (src / "O.inter.json").write_text('{\n  "0": [0, 1],\n  "1": [2 3]\n}\n')
    with pytest.raises(DataValidationError, match=r"O\.inter\.json:3: not valid JSON"):
        import_sequences(src)


def test_cli_import_then_leave_last_out_tests_the_files_targets(tmp_path, capsys):
    dst = tmp_path / "canonical"
    assert main(["-q", "import", "recbole", str(write_unisrec(tmp_path / "g")), str(dst)]) == 0
    assert "timestamps are synthetic" in capsys.readouterr().out
    data = load_folder(dst)
    split = split_interactions(data.interactions, kind="leave-last-out")
    assert sorted(split.test.select("user_id", "item_id").iter_rows()) == [("u1", "d"), ("u2", "z")]
    nested = split_interactions(split.train, kind="leave-last-out")
    assert sorted(nested.test.select("user_id", "item_id").iter_rows()) == [("u1", "c"), ("u2", "y")]


@pytest.mark.data
def test_real_games_import_tests_every_users_file_target(shared_data, tmp_path):
    src = shared_data / "amazon-games-2018"
    dst = tmp_path / "games"
    assert main(["-q", "import", "recbole", str(src), str(dst)]) == 0
    report = json.loads((dst / "import.json").read_text())
    assert (report["n_users"], report["n_items"], report["n_interactions"]) == (50_546, 16_859, 440_264)
    data = load_folder(dst)
    assert data.interactions.height == 440_264 and not any(data.skipped.values())

    def targets(name: str) -> pl.DataFrame:
        return pl.read_csv(src / name, separator="\t", schema_overrides={"user_id:token": pl.String,
                                                                          "item_id:token": pl.String}).select(
            pl.col("user_id:token").alias("user_id"), pl.col("item_id:token").alias("item_id"))

    config = PipelineConfig(split="leave-last-out", seed=0)
    split, _ = windows.test_cut(data.interactions, None, config)
    expected_test = targets("Games.test.inter")
    assert split.test.height == expected_test.height == 50_546
    assert split.test.select("user_id", "item_id").sort("user_id").equals(expected_test.sort("user_id"))
    nested, _ = windows.label_cut(split, config)  # the label window (the ranker's labels, validation) = valid targets
    assert nested.test.select("user_id", "item_id").sort("user_id").equals(
        targets("Games.valid.inter").sort("user_id"))


@pytest.mark.data
def test_real_office_sequences_import_whole(shared_data, tmp_path):
    tables, report = import_sequences(shared_data / "amazon-office-2014")
    assert (report["n_users"], report["n_items"], report["n_interactions"]) == (4905, 2420, 53_258)
    assert report["items_without_text_row"] == 0
    phone = tables["items"].filter(pl.col("item_id") == "1").row(0, named=True)
    assert phone["title"].startswith("Northwestern Bell Big-Button") and phone["description"].startswith(
        "Brand: Northwestern Bell. VISUAL RING INDICATOR")


def test_a_user_without_a_test_row_is_refused_not_tested_on_another_item(tmp_path):
    src = write_unisrec(tmp_path / "g", valid="u1\ta b\tc\nu2\tx\ty\n", test="u1\ta b c\td\n")
    with pytest.raises(DataValidationError, match=r"G\.test\.inter: 1 user\(s\) of the other split files have no row "
                                                  r"here \(e\.g\. user 'u2'\)"):
        import_recbole(src)


def test_a_second_row_without_history_is_refused(tmp_path):
    src = write_unisrec(tmp_path / "g", train="u1\t\ta\nu1\t\tb\n", valid="u1\ta\tb\n", test="u1\ta b\tc\n")
    with pytest.raises(DataValidationError, match=r"G\.train\.inter:3: user 'u1' has a second row with an empty "
                                                  r"history"):
        import_recbole(src)


def test_a_repeated_test_target_is_counted(tmp_path):
    _, report = import_recbole(write_unisrec(tmp_path / "g", valid="u1\ta b\tc\n", test="u1\ta b c\ta\n"))
    assert report["test_targets_seen_before"] == 1


@pytest.mark.parametrize("rating", ["nan", "-3"])
def test_a_rating_that_is_not_a_finite_non_negative_number_names_the_line(tmp_path, rating):
    src = tmp_path / "s"
    src.mkdir()
    (src / "s.inter").write_text(f"user_id:token\titem_id:token\trating:float\nu1\ta\t1\nu1\tb\t{rating}\n")
    with pytest.raises(DataValidationError, match=rf"s\.inter:3: column 'rating': cannot parse '{rating}' \(a rating "
                                                  r"must be a finite number >= 0\)"):
        import_recbole(src)


def test_duplicate_json_keys_are_refused_not_overwritten(tmp_path):
    src = write_json_sequences(tmp_path / "o")
    (src / "O.inter.json").write_text('{"0": [0, 1], "0": [2]}')
    with pytest.raises(DataValidationError, match=r"O\.inter\.json: the key '0' appears twice"):
        import_sequences(src)


def test_only_complete_html_entities_are_decoded():
    from recsys.importers.ordered import clean_text

    assert clean_text("Toner &amp; ink &#39;XL&#x27;  Black &notebook") == "Toner & ink 'XL' Black &notebook"


def test_training_an_order_only_folder_with_another_split_warns(tmp_path, capsys):
    from recsys.cli import warn_if_order_only

    dst = tmp_path / "canonical"
    assert main(["-q", "import", "recbole", str(write_unisrec(tmp_path / "g")), str(dst)]) == 0
    capsys.readouterr()
    assert warn_if_order_only(str(dst), "temporal")
    assert "its times are synthetic, so the temporal split cuts them arbitrarily" in capsys.readouterr().err
    assert not warn_if_order_only(str(dst), "leave-last-out")
