"""The shortcut benchmark's scores (paired difference to the control, share of the gap, the
goal, the yardstick) on a hand-built ``shortcut.json``, and the suite table of two families."""
import json

import pytest

from scripts import shortcut_score as sb
from scripts import suite
from scripts.shortcut_benchmark import LABELS

T_975_2 = 4.302652729911275     # Student's t, 97.5 % quantile, 2 degrees of freedom


def seeds(test, clean_test, worst=None):
    """One row per seed (accuracies as fractions, as shortcut.json stores them)."""
    rows = [{"test": t, "val": t, "clean_test": c, "background_share": [0.5, 0.5]}
            for t, c in zip(test, clean_test)]
    for r, w in zip(rows, worst or []):
        r["worst_group"] = w
    return rows


def hand_built_rows():
    """Three seeds; the per-seed gaps (clean - untreated, random-decoy test) are 20, 20, 10
    points, so the mean of per-seed shares differs from the share of the mean gap."""
    return {
        "clean": seeds([0.80, 0.82, 0.84], [0.81, 0.83, 0.85], [0.7, 0.7, 0.7]),
        "untreated": seeds([0.60, 0.62, 0.74], [0.79, 0.80, 0.81], [0.1, 0.2, 0.3]),
        "control": seeds([0.61, 0.62, 0.74], [0.79, 0.80, 0.81], [0.1, 0.2, 0.3]),
        "rrr_all": seeds([0.70, 0.72, 0.79], [0.75, 0.75, 0.75], [0.4, 0.4, 0.4]),
        # shares 0.95, 0.90, 0.90: meets the goal
        "kernels_reinit_deep": seeds([0.79, 0.80, 0.83], [0.80, 0.80, 0.82], [0.5, 0.6, 0.7]),
        # shares 1.0, 0.95, 1.0 but the decoy-free test drops below the untreated model's
        "kernels_reinit": seeds([0.80, 0.81, 0.84], [0.70, 0.70, 0.70], [0.6, 0.6, 0.6]),
    }


def test_paired_difference_to_the_control_and_its_t_interval():
    scored = sb.score(hand_built_rows())
    vs = scored["kernels_reinit_deep"]["vs_control"]
    # differences 18, 18, 9 points: mean 15, sample std sqrt(27) = 5.196
    assert vs["per_seed"] == pytest.approx([18, 18, 9])
    assert vs["mean"] == pytest.approx(15.0)
    half = T_975_2 * 27 ** 0.5 / 3 ** 0.5
    assert (vs["low"], vs["high"]) == pytest.approx((15 - half, 15 + half))
    assert "vs_control" not in scored["control"]          # no difference to itself
    assert "vs_control" not in scored["clean"] and "vs_control" not in scored["untreated"]


def test_share_of_the_gap_is_the_mean_of_per_seed_shares():
    scored = sb.score(hand_built_rows())
    share = scored["kernels_reinit_deep"]["share"]
    assert share["per_seed"] == pytest.approx([0.95, 0.90, 0.90])
    assert share["mean"] == pytest.approx(2.75 / 3)           # not (80.67-65.33)/(82-65.33)
    sd = ((0.95 - 2.75 / 3) ** 2 + 2 * (0.90 - 2.75 / 3) ** 2) ** 0.5 / 2 ** 0.5
    assert share["high"] - share["mean"] == pytest.approx(T_975_2 * sd / 3 ** 0.5)
    assert scored["rrr_all"]["share"]["per_seed"] == pytest.approx([0.5, 0.5, 0.5])
    assert scored["control"]["share"]["per_seed"] == pytest.approx([0.05, 0, 0], abs=1e-12)
    assert "share" not in scored["clean"] and "share" not in scored["untreated"]
    # means and stds in points; the worst group where every seed recorded it
    assert scored["untreated"]["test"] == pytest.approx((65.333333, 7.571878), abs=1e-5)
    assert scored["kernels_reinit_deep"]["worst_group"] == pytest.approx((60.0, 10.0))


def test_the_goal_is_computed_from_its_criteria():
    scored = sb.score(hand_built_rows())
    assert scored["kernels_reinit_deep"]["goal"] == []
    assert scored["kernels_reinit"]["goal"] == ["decoy-free below untreated"]
    assert scored["rrr_all"]["goal"] == ["share < 90 %", "decoy-free below untreated"]
    assert scored["control"]["goal"] == ["share < 90 %", "below RRR"]
    assert "goal" not in scored["clean"]
    # two seeds are too few; without RRR the comparison cannot be made
    two = {k: v[:2] for k, v in hand_built_rows().items()}
    assert sb.score(two)["kernels_reinit_deep"]["goal"] == ["2 seeds < 3"]
    no_rrr = {k: v for k, v in hand_built_rows().items() if k != "rrr_all"}
    assert sb.score(no_rrr)["kernels_reinit_deep"]["goal"] == ["RRR not run"]
    # a seed without a gap leaves the share undefined, and the goal unmet
    flat = hand_built_rows()
    flat["clean"][2]["test"] = 0.74
    scored = sb.score(flat)
    assert scored["kernels_reinit_deep"]["share"] is None
    assert scored["kernels_reinit_deep"]["goal"] == ["no gap in a seed"]
    with pytest.raises(ValueError, match="one result per seed"):
        sb.score({**hand_built_rows(), "control": hand_built_rows()["control"][:2]})


def test_the_yardstick_check():
    check = sb.yardstick(hand_built_rows())
    assert check["difference"] == pytest.approx(-1.0) and check["passes"]
    moved = hand_built_rows()
    for r in moved["clean"]:
        r["clean_test"] += 0.031       # the decoy costs the clean model 3.1 points
    check = sb.yardstick(moved)
    assert check["difference"] == pytest.approx(-4.1) and not check["passes"]
    assert "FAILS" in sb.yardstick_line(check)
    assert sb.yardstick({"untreated": hand_built_rows()["untreated"]}) is None


def test_the_benchmark_table_has_the_columns_and_computed_cells():
    scored = sb.summarize(hand_built_rows())["models"]
    assert list(scored) == ["clean", "untreated", "control", "rrr_all", "kernels_reinit",
                            "kernels_reinit_deep"]          # the table's order
    lines = sb.table_lines(scored, LABELS.get, has_clean=True)
    assert lines[0] == ("| model | random-decoy test top-1 | decoy-free test top-1 | "
                        "worst group, random-decoy test | share of the gap [95 % CI] | "
                        "meets the goal | vs control, paired [95 % CI] | val top-1 |")
    row = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines[2:]}
    deep = row[LABELS["kernels_reinit_deep"]]
    assert deep[1] == "80.7 ± 2.1" and deep[2] == "80.7 ± 1.2" and deep[3] == "60.0 ± 10.0"
    assert deep[4].startswith("92 % [") and deep[5] == "yes"
    half = T_975_2 * 27 ** 0.5 / 3 ** 0.5
    assert deep[6] == f"+15.0 [{15 - half:+.1f}, {15 + half:+.1f}]"
    assert row[LABELS["kernels_reinit"]][5] == "no: decoy-free below untreated"
    assert row[LABELS["clean"]][4:7] == ["", "", ""]
    # without a clean reference (decoy-free data): no share, no goal, no worst group
    free = {k: v for k, v in hand_built_rows().items() if k != "clean"}
    for rows in free.values():
        for r in rows:
            del r["worst_group"]
    head = sb.table_lines(sb.score(free), LABELS.get, has_clean=False)[0]
    assert head == ("| model | test top-1 | decoy-free test top-1 | "
                    "vs control, paired [95 % CI] | val top-1 |")


def write_family(folder, kind, rows, **args):
    folder.mkdir(parents=True)
    path = folder / "shortcut.json"
    path.write_text(json.dumps({"args": {"model_name": "smallcnn", "decoy_kind": kind,
                                         "decoy_strength": 60, "correlation": 0.95,
                                         "image_size": 64, "seeds": "0,1,2", **args},
                                "rows": rows}))
    return path


def test_suite_table_from_two_families(tmp_path):
    texture = write_family(tmp_path / "texture", "texture", hand_built_rows())
    photo_rows = hand_built_rows()
    del photo_rows["kernels_reinit"]                 # not run on this family
    for r in photo_rows["kernels_reinit_deep"]:
        r["test"] -= 0.05                            # shares 0.70, 0.65, 0.40: misses the goal
    photo = write_family(tmp_path / "photo", "photo", photo_rows)
    args = suite.get_args_parser().parse_args(
        ["--inputs", str(texture), str(photo), "--results_dir", str(tmp_path / "results"),
         "--results_file", str(tmp_path / "RESULTS.md")])
    text = suite.main(args)
    lines = text.splitlines()
    assert "| texture60 | 0,1,2 | 16.7 | -1.0 (passes, within 3) |" in lines
    assert "| photo0.95 | 0,1,2 | 16.7 | -1.0 (passes, within 3) |" in lines
    assert "| treatment | texture60 | photo0.95 | meets the goal on every family |" in lines
    row = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines if line.startswith("| ")}
    deep = row[LABELS["kernels_reinit_deep"]]
    sd = ((0.95 - 2.75 / 3) ** 2 + 2 * (0.90 - 2.75 / 3) ** 2) ** 0.5 / 2 ** 0.5
    assert deep[1] == f"92 % ± {100 * T_975_2 * sd / 3 ** 0.5:.0f} (yes)"
    assert deep[2].startswith("58 % ± ") and deep[2].endswith("(no)")   # (0.7+0.65+0.4)/3
    assert deep[3] == "no |"
    # shares 1.0, 0.95, 1.0: mean 98 %, sd 0.0289, half-width 4.303 * 0.0289 / sqrt(3) = 7 %
    assert row[LABELS["kernels_reinit"]][1:] == ["98 % ± 7 (no)", "–", "no |"]
    assert row[LABELS["rrr_all"]][1] == "50 % ± 0 (no)"
    assert LABELS["clean"] not in row and LABELS["untreated"] not in row
    assert (tmp_path / "results" / "suite.md").read_text() == text
    stored = json.loads((tmp_path / "results" / "suite.json").read_text())
    assert stored["texture60"]["models"]["kernels_reinit_deep"]["goal"] == []
    section = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- section: suite_smallcnn -->" in section and "python -m scripts.suite" in section


def test_suite_meets_the_goal_on_every_family_only_when_each_does(tmp_path):
    paths = [write_family(tmp_path / k, k, hand_built_rows()) for k in ("glyph", "spot")]
    text = suite.main(suite.get_args_parser().parse_args(
        ["--inputs", *map(str, paths), "--results_dir", str(tmp_path / "r")]))
    deep = next(line for line in text.splitlines()
                if line.startswith(f"| {LABELS['kernels_reinit_deep']} |"))
    assert deep.endswith("| yes |")


def test_suite_refuses_what_it_cannot_compare(tmp_path):
    texture = write_family(tmp_path / "a", "texture", hand_built_rows())
    parse = suite.get_args_parser().parse_args
    out = ["--results_dir", str(tmp_path / "r")]
    with pytest.raises(ValueError, match="given twice"):
        suite.main(parse(["--inputs", str(texture), str(texture), *out]))
    free = {k: v for k, v in hand_built_rows().items() if k != "clean"}
    gains = write_family(tmp_path / "b", "none", free)
    with pytest.raises(ValueError, match="no clean-trained reference"):
        suite.main(parse(["--inputs", str(gains), *out]))
    other = write_family(tmp_path / "c", "glyph", hand_built_rows(), model_name="vgg16")
    with pytest.raises(ValueError, match="different networks"):
        suite.main(parse(["--inputs", str(texture), str(other), *out]))
    with pytest.raises(FileNotFoundError, match="run the family's benchmark"):
        suite.main(parse(["--inputs", str(tmp_path / "missing.json"), *out]))
    assert not (tmp_path / "r").exists()
