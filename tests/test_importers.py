"""Importers: MovieLens (100K and ml-latest layouts) and MIND into the canonical folder."""

from __future__ import annotations

import json
import re
from datetime import datetime

import polars as pl
import pytest

from recsys.cli import main
from recsys.dataset import load_folder
from recsys.errors import DataValidationError
from recsys.importers.mind import import_mind
from recsys.importers.movielens import import_movielens

GENRES = "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\nCrime|6\nDocumentary|7\nDrama|8\n" \
         "Fantasy|9\nFilm-Noir|10\nHorror|11\nMusical|12\nMystery|13\nRomance|14\nSci-Fi|15\nThriller|16\nWar|17\n" \
         "Western|18\n"


def _flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


def write_ml100k(folder, ratings: str | None = None, item_bytes: bytes | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(ratings or "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t891717742\n")
    (folder / "u.genre").write_text(GENRES)
    items = (f"10|Toy Story (1995)|01-Jan-1995||http://x|{_flags(3, 4, 5)}\n"
             f"20|Caf\xe9 Noir (1990)|01-Jan-1990||http://y|{_flags(0)}\n").encode("latin-1")
    (folder / "u.item").write_bytes(item_bytes or items)
    return folder


def test_ml100k_import_maps_genres_ratings_and_times(tmp_path):
    tables, report = import_movielens(write_ml100k(tmp_path / "ml"))
    items = tables["items"].sort("item_id")
    assert items["category"].to_list() == ["Animation|Children's|Comedy", "unknown"]
    assert items["title"].to_list() == ["Toy Story (1995)", "Café Noir (1990)"]  # latin-1 decoded
    inter = tables["interactions"]
    assert inter["weight"].to_list() == [5.0, 3.0, 4.0]
    assert inter["timestamp"][0] == datetime(1997, 12, 4, 15, 55, 49)
    assert (report["n_users"], report["n_items"], report["n_interactions"]) == (2, 2, 3)


def test_descriptions_join_by_id_or_by_title_and_unmatched_are_counted(tmp_path):
    src = write_ml100k(tmp_path / "ml")
    by_id = tmp_path / "plots.csv"
    by_id.write_text('movie_id,movie_title,description,rating\n10,Toy Story (1995),"Toys, alive.",8.3\n999,X,Y,1\n')
    by_title = tmp_path / "wiki.csv"
    by_title.write_text("movie_title,wiki_summary\nCafé Noir (1990),A 1990 film.\nToy Story (1995),Pixar film.\n")
    tables, report = import_movielens(src, descriptions=[by_id, by_title])
    described = dict(tables["items"].select("item_id", "description").iter_rows())
    assert described == {"10": "Toys, alive. Pixar film.", "20": "A 1990 film."}
    assert report["descriptions"][str(by_id)] == {"items_matched": 1, "items_without_text": 1}
    assert "rating" not in tables["items"].columns  # outside popularity signals never come in


@pytest.mark.parametrize(("ratings", "message"), [
    ("1\t10\t5\t881250949\n1\t20\t3\n", r"u.data:2: expected 4 tab-separated fields, found 3"),
    ("1\t10\t5\t881250949\n\n1\t20\t3\tyesterday\n", r"u.data:3: column 'timestamp': cannot parse 'yesterday'"),
    ("1\t10\tfive\t881250949\n", r"u.data:1: column 'rating': cannot parse 'five'"),
    ("1\t77\t5\t881250949\n", r"1 rating\(s\) name movies missing from the movie file, e.g. item '77'"),
])
def test_malformed_ratings_name_file_and_line(tmp_path, ratings, message):
    with pytest.raises(DataValidationError, match=message):
        import_movielens(write_ml100k(tmp_path / "ml", ratings=ratings))


def test_wrong_encoding_names_the_line(tmp_path):
    src = write_ml100k(tmp_path / "ml")
    with pytest.raises(DataValidationError, match=r"u.item:2: bytes b'\\xe9' are not valid utf-8"):
        import_movielens(src, encoding="utf-8")
    with pytest.raises(DataValidationError, match="unknown encoding 'klingon'"):
        import_movielens(src, encoding="klingon")


def write_ml_latest(folder):
    folder.mkdir(parents=True)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964982704\n"
                                        "2,2,5.0,964982705\n")
    (folder / "movies.csv").write_text('movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance'
                                       "\n2,Heat (1995),(no genres listed)\n")
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0112346,9087\n2,0113277,949\n")
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,2,heist,1\n2,2,Heist,2\n2,2,pacino,3\n")
    return folder


def test_ml_latest_layout_with_links_and_tags(tmp_path):
    src = write_ml_latest(tmp_path / "latest")
    plots = tmp_path / "plots.csv"
    plots.write_text("imdbId,plot\ntt0113277,A group of robbers.\n")
    tables, report = import_movielens(src, descriptions=[plots])
    items = {row["item_id"]: row for row in tables["items"].iter_rows(named=True)}
    assert items["1"]["title"] == "American President, The (1995)"
    assert items["1"]["category"] == "Comedy|Drama|Romance"
    assert items["2"]["category"] == "unknown"
    assert items["2"]["description"] == "A group of robbers. Tags: heist, pacino"
    assert report["layout"] == "ml-latest"
    assert tables["interactions"]["weight"].to_list() == [4.0, 3.5, 5.0]


def test_ml_latest_wrong_column_count_names_the_line(tmp_path):
    src = write_ml_latest(tmp_path / "latest")
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5\n")
    with pytest.raises(DataValidationError, match=r"ratings.csv:3: expected 4 comma-separated fields, found 3"):
        import_movielens(src)


NEWS = ("N1\tsports\tfootball\tDerby win\tThe striker scored twice.\turl\t[]\t[]\n"
        "N2\tfinance\tmarkets\tStocks rally\t\turl\t[]\t[]\n")
BEHAVIORS = ("1\tU1\t11/12/2019 2:14:46 PM\tN2 N9\tN1-1 N2-0 N7-0\n"
             "2\tU2\t11/11/2019 9:00:00 AM\t\tN2-1\n")


def write_mind(folder, behaviors=BEHAVIORS, news=NEWS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "behaviors.tsv").write_text(behaviors)
    (folder / "news.tsv").write_text(news)
    return folder


def test_mind_import_builds_impressions_clicks_and_history(tmp_path):
    tables, report = import_mind(write_mind(tmp_path / "mind"))
    imp = tables["impressions"]
    assert imp.select("impression_id", "item_id", "clicked").rows() == [
        ("1", "N1", 1), ("1", "N2", 0), ("1", "N7", 0), ("2", "N2", 1)]
    assert imp["timestamp"][0] == datetime(2019, 11, 12, 14, 14, 46)
    inter = tables["interactions"]
    history = inter.filter(pl.col("user_id") == "U1").sort("timestamp")
    # history (N2 then N9) sits just before the log starts, in its listed order, then the click
    assert history["item_id"].to_list() == ["N2", "N9", "N1"]
    assert history["timestamp"][1] < datetime(2019, 11, 11, 9, 0, 0) <= history["timestamp"][2]
    assert tables["items"].filter(pl.col("item_id") == "N1")["description"][0] == "football. The striker scored twice."
    assert report["impression_rows_without_news_row"] == 1  # N7
    assert report["interactions_without_news_row"] == 1  # N9


@pytest.mark.parametrize(("behaviors", "message"), [
    ("1\tU1\t11/12/2019 2:14:46 PM\tN2\n", r"behaviors.tsv:1: expected 5 tab-separated fields, found 4"),
    ("1\tU1\t2019-11-12 14:14\t\tN1-1\n", r"behaviors.tsv:1: column 'time': cannot parse '2019-11-12 14:14'"),
    ("1\tU1\t11/12/2019 2:14:46 PM\t\tN1-1 N2-2\n", r"behaviors.tsv:1: impression entry 'N2-2' is not"),
    ("1\tU1\t11/12/2019 2:14:46 PM\t\tN1-1\n1\tU2\t11/12/2019 2:14:46 PM\t\tN1-0\n",
     r"behaviors.tsv:2: impression id '1' repeats an earlier line"),
])
def test_malformed_mind_lines_are_named(tmp_path, behaviors, message):
    with pytest.raises(DataValidationError, match=message):
        import_mind(write_mind(tmp_path / "mind", behaviors=behaviors))


def test_cli_import_writes_a_loadable_folder_and_refuses_to_overwrite(tmp_path, capsys):
    src = write_mind(tmp_path / "mind")
    dst = tmp_path / "canonical"
    assert main(["-q", "import", "mind", str(src), str(dst)]) == 0
    assert "4 impressions" in capsys.readouterr().out
    data = load_folder(dst)
    assert data.impressions.height == 3  # N7 has no news row: skipped and counted on load
    assert data.skipped["impressions_with_unknown_item"] == 1
    assert json.loads((dst / "import.json").read_text())["layout"] == "mind"
    assert main(["-q", "import", "mind", str(src), str(dst)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["-q", "import", "mind", str(src), str(dst), "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".canonical")]  # no temp folder left


def test_import_and_generate_refuse_a_taken_destination_before_any_work(tmp_path, capsys, monkeypatch):
    """A taken DST fails at once: the generator (minutes at scale 10) and the importer never run."""
    import recsys.demo_data
    import recsys.importers.mind

    def must_not_run(*args, **kwargs):
        raise AssertionError("the work started before the destination was checked")

    monkeypatch.setattr(recsys.demo_data, "generate_demo", must_not_run)
    monkeypatch.setattr(recsys.importers.mind, "import_mind", must_not_run)
    taken = tmp_path / "taken"
    taken.mkdir()
    assert main(["-q", "generate", str(taken), "--scale", "0.01"]) == 2
    assert f"{taken} already exists; choose another destination or pass --overwrite" in capsys.readouterr().err
    assert main(["-q", "import", "mind", str(tmp_path / "no-such-source"), str(taken)]) == 2
    assert f"{taken} already exists" in capsys.readouterr().err
    # A free name goes on to the work.
    with pytest.raises(AssertionError, match="before the destination was checked"):
        main(["-q", "generate", str(tmp_path / "free"), "--scale", "0.01"])
    with pytest.raises(AssertionError, match="before the destination was checked"):
        main(["-q", "import", "mind", str(tmp_path / "no-such-source"), str(tmp_path / "free")])


def test_generate_names_a_scale_out_of_range_even_where_dst_is_taken(tmp_path, capsys):
    """Both mistakes at once: the scale is named first (then the destination on the next try)."""
    assert main(["-q", "generate", str(tmp_path), "--scale", "20"]) == 2
    assert "--scale: scale factor must be in (0, 10], got 20.0" in capsys.readouterr().err


@pytest.mark.data
def test_real_movielens_100k_imports_whole_with_imdb_text(shared_data, tmp_path):
    src = shared_data / "movielens-100k"
    tables, report = import_movielens(src / "ml-100k", descriptions=[src / "movielens100k_imdb_details.csv"])
    assert (report["n_interactions"], report["n_users"], report["n_items"]) == (100_000, 943, 1682)
    assert report["descriptions"][str(src / "movielens100k_imdb_details.csv")]["items_matched"] == 1591
    toy = tables["items"].filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy["category"] == "Animation|Children's|Comedy" and "cowboy doll" in toy["description"]


@pytest.mark.data
def test_real_mind_fragment_imports_and_loads(shared_data, tmp_path):
    dst = tmp_path / "mind"
    assert main(["-q", "import", "mind", str(shared_data / "mind-fragment"), str(dst)]) == 0
    report = json.loads((dst / "import.json").read_text())
    assert (report["n_impressions"], report["n_impression_rows"], report["n_items"]) == (5000, 189_359, 2000)
    data = load_folder(dst)
    # rows naming news without a news.tsv row are skipped on load and counted, never silently
    assert data.impressions.height + data.skipped["impressions_with_unknown_item"] == 189_359
    assert data.interactions.height + data.skipped["interactions_with_unknown_item"] \
        + data.skipped["interactions_exact_duplicates"] == report["n_interactions"]


# --- issue 17: empty, cut-off and malformed files end in an error naming the file and the line ---

def test_empty_behaviors_file_is_refused(tmp_path):
    with pytest.raises(DataValidationError, match=r"behaviors\.tsv: the file has no impressions lines \(it is empty\)"):
        import_mind(write_mind(tmp_path / "mind", behaviors=""))


def test_behaviors_without_any_click_or_history_is_refused(tmp_path):
    behaviors = "1\tU1\t11/12/2019 2:14:46 PM\t\tN1-0 N2-0\n"
    with pytest.raises(DataValidationError, match=r"behaviors\.tsv: no impression has a click .* 0 interactions "
                                                  r"from 2 shown item\(s\)"):
        import_mind(write_mind(tmp_path / "mind", behaviors=behaviors))


def test_cli_import_of_an_empty_u_data_exits_2(tmp_path, capsys):
    src = write_ml100k(tmp_path / "ml", ratings="\n")
    assert main(["-q", "import", "movielens", str(src), str(tmp_path / "out")]) == 2
    assert re.search(r"^recsys: error: .*u\.data: the file has no ratings lines \(it is empty\)",
                     capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["ml-100k", "ml-latest"])
def test_ratings_file_cut_mid_line_is_refused_not_dated_1970(tmp_path, layout):
    if layout == "ml-100k":
        src, name = write_ml100k(tmp_path / "ml", ratings="1\t10\t5\t881250949\n1\t20\t3\t8812"), "u.data"
    else:
        src, name = write_ml_latest(tmp_path / "ml"), "ratings.csv"
        (src / name).write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,96498")
    line = 2 if layout == "ml-100k" else 3
    with pytest.raises(DataValidationError, match=rf"{name}:{line}: column 'timestamp': cannot parse '\d+' .*"
                                                  r"MovieLens ratings start in 1995\)\. The file ends mid-line here: "
                                                  r"it looks cut off"):
        import_movielens(src)


def test_ragged_csv_line_number_counts_blank_lines(tmp_path):
    src = write_ml_latest(tmp_path / "latest")
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n\n1,1,4.0,964982703\n\n1,2,3.5\n")
    with pytest.raises(DataValidationError, match=r"ratings\.csv:5: expected 4 comma-separated fields, found 3"):
        import_movielens(src)


@pytest.mark.parametrize(("content", "message"), [
    (b"movie_id,description\n10,a\n20,b,c\n", r"plots\.csv:3: expected 2 comma-separated fields, found 3"),
    (b"movie_id,description\n10,a\n20,caf\xe9\n", r"plots\.csv:3: bytes b'\\xe9' are not valid utf-8; description "
                                                    r"files are read as UTF-8"),
])
def test_malformed_description_file_names_the_line(tmp_path, content, message):
    plots = tmp_path / "plots.csv"
    plots.write_bytes(content)
    with pytest.raises(DataValidationError, match=message):
        import_movielens(write_ml100k(tmp_path / "ml"), descriptions=[plots])


def test_bad_genre_number_names_the_line(tmp_path):
    src = write_ml100k(tmp_path / "ml")
    (src / "u.genre").write_text("unknown|0\nAction|one\n")
    with pytest.raises(DataValidationError, match=r"u\.genre:2: column 'genre number': cannot parse 'one'"):
        import_movielens(src)


def test_a_title_with_a_unicode_line_separator_stays_one_line(tmp_path):
    # latin-1 byte 0x85 decodes to U+0085, which str.splitlines treats as a line break.
    items = (f"10|Toy Story\x85 (1995)|01-Jan-1995||http://x|{_flags(3)}\n"
             f"20|Heat (1995)|01-Jan-1995||http://y|{_flags(0)}\n").encode("latin-1")
    tables, _ = import_movielens(write_ml100k(tmp_path / "ml", item_bytes=items))
    assert tables["items"].sort("item_id")["title"].to_list() == ["Toy Story\x85 (1995)", "Heat (1995)"]
