"""The `seqlab` command's conventions: TensorFlow's C++ chatter hidden, status on stderr through logging (and in
the run's log file), results on stdout, --version, one way to name the MLflow store, predict's input formats."""

import gzip
import logging
import os
import subprocess
import sys

import pytest

from seqlab import __version__
from seqlab.cli.entry import log_to_stderr, main
from seqlab.serving.predict import read_examples
from seqlab.tensorflow_logs import shown
from tests.conftest import run_seqlab, seqlab_command

# Any C++ log line TensorFlow writes, e.g. "I0000 00:00:1795847547.236388    7257 execute.cc:1775] Executing op"
PLACEMENT_SCRIPT = """
import seqlab
import tensorflow as tf
tf.debugging.set_log_device_placement(True)  # C++ INFO lines on demand: "Executing op AddV2 in device ..."
tf.constant(1.0) + 1
"""


def python(script: str, env: dict, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=cwd)


@pytest.mark.slow
def test_importing_seqlab_hides_tensorflow_cpp_log_lines_unless_the_user_asks_for_them():
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = python(PLACEMENT_SCRIPT, env)
    assert quiet.returncode == 0, quiet.stderr
    assert "Executing op AddV2" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if line[:1] in "IWE" and line[1:5].isdigit()]
    verbose = python(PLACEMENT_SCRIPT, {**env, "TF_CPP_MIN_LOG_LEVEL": "0"})  # the user's own value wins
    assert verbose.returncode == 0, verbose.stderr
    assert "Executing op AddV2" in verbose.stderr


@pytest.mark.unit
def test_lines_written_while_tensorflow_loads_obey_the_level():
    """TensorFlow writes these before it reads TF_CPP_MIN_LOG_LEVEL (which CPU features decide which lines)."""
    written = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
               "I0000 00:00:1795847547.236388    7257 port.cc:153] oneDNN custom operations are on.\n"
               "W0000 00:00:1795847547.236388    7257 cpu_feature_guard.cc:12] a warning\n"
               "E0000 00:00:1795847547.236388    7257 util.cc:131] oneDNN supports DT_BOOL only on platforms with "
               "AVX-512.\n"
               "F0000 00:00:1795847547.236388    7257 port.cc:1] fatal\n"
               "/x.py:3: UserWarning: a Python warning\n")
    assert shown(written, 3) == ("F0000 00:00:1795847547.236388    7257 port.cc:1] fatal\n"
                                 "/x.py:3: UserWarning: a Python warning\n")
    assert shown(written, 2).splitlines()[0].startswith("E0000")
    assert shown(written, 0) == written


@pytest.mark.unit
def test_version_and_bare_command_print_to_stdout(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"seqlab {__version__}\n"
    assert main([]) == 0
    assert "usage: seqlab COMMAND" in capsys.readouterr().out


@pytest.mark.unit
def test_status_lines_of_any_seqlab_module_go_to_stderr_outside_hydra(capsys):
    log_to_stderr()
    logging.getLogger("seqlab.some_module").info("wrote 3 predictions to out.csv")
    logging.getLogger("seqlab.some_module").warning("skipped 2 lines of http://alice:hunter2@host/x.csv")
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err == ("seqlab: wrote 3 predictions to out.csv\n"
                          "seqlab: warning: skipped 2 lines of http://<redacted>@host/x.csv\n")


@pytest.mark.slow
def test_a_training_run_logs_status_to_stderr_and_its_log_file(tmp_path):
    (tmp_path / "tiny.csv").write_text("text,label\ngood film,pos\nbad film,neg\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    result = run_seqlab("train", "dataset=custom", "dataset.path=tiny.csv", "dataset.test_path=missing.csv",
                        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 3, result.stderr  # the data error comes after the column detection's status line
    status = "'tiny.csv': texts from column 'text', labels from 'label'"
    assert f"seqlab: {status}" in result.stderr and status not in result.stdout
    assert "seqlab: error: dataset.test_path 'missing.csv' does not exist." in result.stderr
    assert status in (run_dir / "seqlab.log").read_text()  # Hydra's job log: no longer empty


@pytest.mark.slow
def test_train_reads_the_store_from_mlflow_tracking_uri_unless_tracking_uri_is_given(tmp_path):
    store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    composed = run_seqlab("train", "--cfg", "job", "--resolve", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": store})
    assert f"uri: {store}\n" in composed.stdout, composed.stderr
    given = run_seqlab("train", "--cfg", "job", "--resolve", "tracking.uri=sqlite:///mine.db", cwd=tmp_path,
                       env={"MLFLOW_TRACKING_URI": store})
    assert "uri: sqlite:///mine.db\n" in given.stdout, given.stderr


@pytest.mark.unit
@pytest.mark.parametrize("name", ["in.csv.gz", "in.tsv", "in.tsv.gz", "in.jsonl.gz"])
def test_predict_reads_the_formats_training_reads(tmp_path, name):
    rows = [("r1", "a wonderful film"), ("r2", "dull, with\ttabs and, commas")]
    path = tmp_path / name
    if ".jsonl" in name:
        text = "".join(f'{{"id": "{i}", "text": "{t}"}}\n'.replace("\t", "\\t") for i, t in rows)
    else:
        separator = "\t" if ".tsv" in name else ","
        quote = (lambda t: t.replace("\t", " ")) if separator == "\t" else (lambda t: f'"{t}"')
        text = f"id{separator}text\n" + "".join(f"{i}{separator}{quote(t)}\n" for i, t in rows)
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    texts, ids, _ = read_examples(str(path))
    assert ids == ["r1", "r2"] and texts[0] == "a wonderful film" and texts[1].startswith("dull, with")


@pytest.mark.slow
def test_a_closed_pipe_on_stdout_ends_quietly():
    """`seqlab compare | head`: when the reader of stdout leaves, no traceback (exit 141, as for SIGPIPE)."""
    process = subprocess.Popen(seqlab_command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # before the help is written
    stderr = process.stderr.read()
    assert process.wait(timeout=60) in (0, 141) and "Traceback" not in stderr and "BrokenPipe" not in stderr
