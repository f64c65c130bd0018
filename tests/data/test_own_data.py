"""The user's own data: text:, csv:, npz:, ts: on files the tests write (loaders only; the
command-line runs are in tests/test_cli_own_data.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnx.data import get_task
from rnnx.data.text import Tokenizer
from rnnx.data.tsfile import parse_ts

# ---------------------------------------------------------------------- text


def _write_texts(folder, n, length=600):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        words = rng.choice(["alpha", "beta", "gamma", "delta"], size=length // 6)
        (folder / f"part{i}.txt").write_text(" ".join(words) + f" end{i}\n")
    return folder


def test_text_folder_is_split_by_whole_files(tmp_path):
    folder = _write_texts(tmp_path / "docs", 6)
    (folder / "notes.md").write_text("not a .txt file: ignored")
    t = get_task(f"text:{folder}", seq_len=16)
    files = t.info["split_files"]
    assert sum(len(v) for v in files.values()) == 6
    assert all(len(v) >= 1 for v in files.values())
    assert not set(files["train"]) & set(files["test"]) and not set(files["val"]) & set(
        files["test"]
    )
    assert t.kind == "lm" and t.vocab_size == len(t.info["vocab"]) == t.n_classes
    assert t.info["inferred"]["split"] == "by file" and t.info["inferred"]["files"] == 6
    # inputs and next-token targets
    x, y = t.train[0]
    assert x.shape == y.shape == (16,) and torch.equal(x[1:], y[:-1])
    other = get_task(f"text:{folder}", seq_len=16, seed=1)
    assert other.info["split_files"] != files  # the seed draws the files


def test_text_one_file_is_split_in_blocks_and_bytes_work(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("héllo wörld, " * 100)
    t = get_task(f"text:{f}", seq_len=8)
    assert t.info["inferred"]["split"] == "by block" and "é" in t.info["vocab"]
    n = sum(len(s) * 8 for s in (t.train, t.val, t.test))  # windows share one token
    assert n <= len(f.read_text()) and len(t.train) > 6 * len(t.test) / 2
    b = get_task(f"text:{f}", seq_len=8, vocab="bytes")
    assert b.vocab_size == 256 and b.info["tokenizer"] == "bytes"
    assert b.info["inferred"]["bytes"] > t.info["inferred"]["characters"]  # é, ö: 2 bytes


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        get_task(f"text:{tmp_path / 'nope.txt'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no \.txt files"):
        get_task(f"text:{tmp_path / 'empty'}")
    short = tmp_path / "short.txt"
    short.write_text("abc" * 20)
    with pytest.raises(
        ValueError, match="fewer than seq_len \\+ 1 = 129; lower --task-arg seq_len"
    ):
        get_task(f"text:{short}")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe" * 100)
    with pytest.raises(ValueError, match=r"not utf-8 text .*vocab=bytes"):
        get_task(f"text:{binary}")
    with pytest.raises(ValueError, match="character\\(s\\) not in the model's vocabulary"):
        get_task(f"text:{short}", seq_len=4, chars="ab")


def test_tokenizer_round_trip():
    chars = Tokenizer("chars", "abc ")
    assert chars.decode(chars.encode("ab c")) == "ab c"
    with pytest.raises(ValueError, match="--prompt: 1 character\\(s\\) not in"):
        chars.encode("abz", what="--prompt")
    b = Tokenizer("bytes")
    assert b.decode(b.encode("héllo")) == "héllo" and b.size == 256
    assert Tokenizer.from_spec({"tokenizer": "bytes"}).kind == "bytes"
    assert Tokenizer.from_spec({"vocab": "xy"}).chars == "xy"
    assert Tokenizer.from_spec({"name": "adding"}) is None


# ---------------------------------------------------------------------- csv


def _hourly(path, n=300, **extra):
    import pandas as pd

    t = pd.date_range("2024-01-01", periods=n, freq="h")
    v = np.sin(np.arange(n) * 2 * np.pi / 24) + 0.05 * np.random.default_rng(0).normal(size=n)
    pd.DataFrame({"time": t, "value": v, **extra}).to_csv(path, index=False)
    return v


def test_csv_two_columns_need_no_arguments(tmp_path):
    pytest.importorskip("pandas")
    f = tmp_path / "series.csv"
    v = _hourly(f)
    t = get_task(f"csv:{f}")
    inf = t.info["inferred"]
    assert inf["time_column"] == "time" and inf["frequency"] == "1 h"
    assert inf["targets"] == ["value"] and inf["covariates"] == [] and inf["seasons"] == [24, 168]
    assert inf["horizon"] == 24 and inf["lookback"] == 48 and t.d_output == 24 and t.d_input == 1
    # split by time: 70/10/20, windows belong to the split of their targets
    n_train = 300 - 30 - 60
    assert len(t.test) == 60 - 24 + 1
    mean, std = t.info["target_mean_std"][0]
    assert mean == pytest.approx(v[:n_train].mean()) and std == pytest.approx(v[:n_train].std())
    x, y = t.test[0]
    last_input = (v[300 - 60 - 1] - mean) / std  # the window's context ends just before the test
    assert float(x[-1, 0]) == pytest.approx(last_input, abs=1e-5)
    assert float(y[0]) == pytest.approx((v[300 - 60] - mean) / std, abs=1e-5)
    ref = t.info["reference"]
    assert set(ref) == {"naive (last value)", "seasonal naive lag 24", "linear (least squares)"}
    assert ref["seasonal naive lag 24"]["mse"] < ref["naive (last value)"]["mse"]


def test_csv_covariates_targets_regression_and_shuffled_rows(tmp_path):
    pytest.importorskip("pandas")
    import pandas as pd

    f = tmp_path / "multi.csv"
    n = 200
    _hourly(f, n, temp=np.cos(np.arange(n) / 5), flag=np.arange(n) % 7 == 0)
    frame = pd.read_csv(f).sample(frac=1.0, random_state=0)  # rows out of order
    frame.to_csv(f, index=False)
    t = get_task(f"csv:{f}", covariates=["temp", "flag"], horizon=4)
    assert t.d_input == 3 and t.d_output == 4
    assert t.info["inferred"]["targets"] == ["value"]
    flags = t.train.x[..., 2].unique().tolist()
    assert set(flags) <= {0.0, 1.0}  # 0/1 columns are not standardised
    both = get_task(f"csv:{f}", target=["value", "temp"], horizon=3)
    assert both.d_output == 6 and both.info["inferred"]["covariates"] == ["flag"]
    reg = get_task(f"csv:{f}", problem="regression", target="value", lookback=12)
    assert reg.d_input == 2 and reg.d_output == 1
    assert set(reg.info["reference"]) == {"training mean", "linear (least squares)"}
    with pytest.raises(ValueError, match="no column 'vlaue'; did you mean 'value'"):
        get_task(f"csv:{f}", target="vlaue")
    with pytest.raises(ValueError, match="no window fits in the train split"):
        get_task(f"csv:{f}", horizon=150)


def test_csv_without_time_column_and_with_gaps(tmp_path):
    pytest.importorskip("pandas")
    f = tmp_path / "plain.csv"
    vals = np.arange(100, dtype=float)
    vals[10] = np.nan
    f.write_text("reading\n" + "\n".join("NA" if np.isnan(v) else str(v) for v in vals) + "\n")
    t = get_task(f"csv:{f}", horizon=2, lookback=4)
    inf = t.info["inferred"]
    assert inf["time_column"] == "none (row order)" and inf["filled_missing"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("time,value\n1,a\n2,b\n3,c\n4,d\n")
    with pytest.raises(ValueError, match="column 'value' is not numeric"):
        get_task(f"csv:{bad}")


def test_parquet_needs_an_engine(tmp_path):
    pd = pytest.importorskip("pandas")
    f = tmp_path / "s.parquet"
    frame = pd.DataFrame({"time": np.arange(100), "value": np.sin(np.arange(100))})
    try:
        frame.to_parquet(f)
    except ImportError:
        f.write_bytes(b"PAR1")
        from rnnx.data import MissingDependencyError

        with pytest.raises(MissingDependencyError, match="reading Parquet needs pyarrow"):
            get_task(f"csv:{f}")
        return
    t = get_task(f"csv:{f}", horizon=2, lookback=4)
    assert t.info["inferred"]["targets"] == ["value"]


# ---------------------------------------------------------------------- npz


def test_npz_guesses_the_kind_and_reports_it(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 12, 3)).astype(np.float32)
    labels = np.array(["cat", "dog"])[(x[:, :, 0].mean(1) > 0).astype(int)]
    lengths = rng.integers(4, 13, size=50)
    np.savez(tmp_path / "cls.npz", x=x, y=labels, lengths=lengths)
    t = get_task(f"npz:{tmp_path / 'cls.npz'}")
    assert t.kind == "classification" and t.n_classes == 2 and t.d_input == 3
    assert t.info["inferred"]["labels"] == ["cat", "dog"]
    assert t.info["inferred"]["lengths"] == [int(lengths.min()), int(lengths.max())]
    assert (len(t.train), len(t.val), len(t.test)) == (36, 4, 10)
    i = int(t.train.lengths.argmin())
    assert bool((t.train.x[i, int(t.train.lengths[i]) :] == 0).all())  # padding stays 0

    tags = rng.integers(0, 4, size=(30, 8))
    tags[:, -1] = -100
    np.savez(tmp_path / "tag.npz", x=rng.integers(0, 10, size=(30, 8)), y=tags)
    t = get_task(f"npz:{tmp_path / 'tag.npz'}")
    assert t.kind == "tagging" and t.vocab_size is not None and t.n_classes == 4
    assert bool((t.train.y[:, -1] == -100).all())

    np.savez(tmp_path / "reg.npz", x=x, y=x.mean((1, 2))[:, None].repeat(2, 1))
    t = get_task(f"npz:{tmp_path / 'reg.npz'}")
    assert t.kind == "regression" and t.d_output == 2
    np.savez(tmp_path / "int.npz", x=x, y=(x[:, 0, 0] > 0).astype(np.int64))
    assert get_task(f"npz:{tmp_path / 'int.npz'}", kind="regression").kind == "regression"


def test_npz_predefined_splits_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = (x.sum(1) > 0).astype(np.int64)
    np.savez(tmp_path / "s.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    t = get_task(f"npz:{tmp_path / 's.npz'}")
    assert len(t.test) == 10 and len(t.train) + len(t.val) == 30
    assert "predefined train/test" in t.info["split"]
    np.savez(tmp_path / "bad.npz", x=x, target=y)
    with pytest.raises(ValueError, match="unexpected array 'target'"):
        get_task(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "obj.npz", x=x, y=np.array([{"a": 1}] * 40, dtype=object))
    with pytest.raises(ValueError, match="would need pickle"):
        get_task(f"npz:{tmp_path / 'obj.npz'}")
    np.savez(tmp_path / "len.npz", x=x, y=y, lengths=np.full(40, 7))
    with pytest.raises(ValueError, match="lengths: expected values in \\[1, 6\\]"):
        get_task(f"npz:{tmp_path / 'len.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not a readable \.npz file"):
        get_task(f"npz:{tmp_path / 'junk.npz'}")


# ---------------------------------------------------------------------- ts

_TS = """# comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
@data
"""


def _write_ts(path, n=30, seed=0, header=_TS):
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        L = int(rng.integers(5, 12))
        label = "ab"[i % 2]
        chans = [rng.normal(size=L) + (i % 2) for _ in range(2)]
        vals = [",".join(f"{v:.3f}" for v in c) for c in chans]
        if i == 0:
            vals[0] = "?," + vals[0].split(",", 1)[1] + ",?"  # missing values
        lines.append(":".join(vals) + f":{label}")
    path.write_text(header + "\n".join(lines) + "\n")


def test_ts_folder_file_and_regression(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    _write_ts(d / "Toy_TRAIN.ts", 30, 0)
    _write_ts(d / "Toy_TEST.ts", 20, 1)
    t = get_task(f"ts:{d}")
    assert (len(t.train) + len(t.val), len(t.test)) == (30, 20)
    inf = t.info["inferred"]
    assert inf["kind"] == "classification" and inf["channels"] == 2 and inf["classes"] == 2
    assert inf["equal_length"] is False and t.train.lengths is not None
    one = get_task(f"ts:{d / 'Toy_TEST.ts'}")  # one file: a held-out test split
    assert len(one.test) == 4 and len(one.train) + len(one.val) == 16
    reg = tmp_path / "reg.ts"
    reg.write_text(
        "@problemName R\n@targetLabel true\n@data\n"
        + "".join(f"{i},{i + 1},{i + 2}:{i * 0.5}\n" for i in range(20))
    )
    r = get_task(f"ts:{reg}")
    assert r.kind == "regression" and r.d_output == 1 and r.info["inferred"]["channels"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_TS + "1,2:1,2:c\n", "class 'c' is not among the declared @classLabel values"),
        (_TS + "1,2:1,2:a\n1,2:a\n", "line 11: 1 channels, the first case has 2"),
        (_TS.replace("@data\n", ""), "no @data section"),
        ("@timeStamps true\n@data\n(1,2):a\n", "@timeStamps true .* is not supported"),
        (_TS + "1,x:1,2:a\n", "line 10: could not convert"),
        ("@classLabel false\n@data\n1,2\n", None),
    ],
)
def test_ts_parser_errors_name_the_line(text, message):
    if message is None:
        xs, ys, meta = parse_ts(text)
        assert len(xs) == 1 and ys == [] and meta["classlabel"] is False
        return
    with pytest.raises(ValueError, match=message):
        parse_ts(text, source="toy.ts")


def test_ts_reads_aeon_files_like_the_aeon_task():
    from rnnx.data import _sources

    if not _sources.available("aeon"):
        pytest.skip("aeon wheel not fetched: rnnx data fetch aeon")
    import zipfile

    from rnnx.data.timeseries import read_ts

    with zipfile.ZipFile(_sources.archive_path("aeon", "test")) as z:
        names = [n for n in z.namelist() if n.endswith(".ts") and "UnitTest" not in n]
        for n in names:
            xs, ys, meta = parse_ts(z.read(n).decode(), source=n)
            assert len(xs) == len(ys) > 0, n
            if meta.get("dimensions"):
                assert xs[0].shape[1] == int(meta["dimensions"]), n
            if meta["equallength"] and meta.get("serieslength"):
                assert {len(x) for x in xs} == {int(meta["serieslength"])}, n
        jv = z.read("aeon/datasets/data/JapaneseVowels/JapaneseVowels_TRAIN.ts").decode()
    xs, labels = read_ts(jv)
    assert len(xs) == 270 and xs[0].shape[1] == 12 and sorted(set(labels))[0] == "1"
