"""Tests for tools/prepare_data.py, in-process and as a command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver

from fastcifar.data import pipeline, sources
from fastcifar.data.sources import tfds_source
from tests.data.test_sources import (CIFAR10_NAMES, tar_gz,
                                     write_cifar10_python,
                                write_image_folder)
from tools import prepare_data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "tools", "prepare_data.py")


@pytest.fixture(autouse=True)
def _restore_flags():
  """The tool's flags are left as each test found them."""
  saved = flagsaver.save_flag_values(prepare_data.FLAGS)
  yield
  flagsaver.restore_flag_values(saved, prepare_data.FLAGS)


def _run(*args: str) -> int:
  return prepare_data.main(["prepare_data", *args])


def _error(capsys) -> str:
  """The single stderr line of a failed run, without its prefix."""
  captured = capsys.readouterr()
  lines = captured.err.splitlines()
  assert len(lines) == 1, captured.err
  assert lines[0].startswith("prepare_data: error: ")
  assert captured.out == ""
  return lines[0][len("prepare_data: error: "):]


def test_prepares_an_official_archive_for_training(tmp_path, capsys):
  folder, arrays = write_cifar10_python(str(tmp_path / "src"))
  archive = tar_gz(folder, str(tmp_path / "cifar-10-python.tar.gz"))
  out = tmp_path / "prepared"
  assert _run(f"--source={archive}", f"--data_dir={out}") == 0
  path = sources.prepared_path(str(out), "cifar10")
  assert os.listdir(out) == [os.path.basename(path)]

  report = capsys.readouterr().out
  assert f"wrote {path}" in report
  assert "15 train and 4 test images, 10 classes (airplane, " in report
  assert f"--dataset=cifar10 --data_dir={out}" in report
  assert " s: " in report  # the seconds it took

  # What training will load from --dataset=cifar10 --data_dir=DIR.
  data = sources.load("cifar10", str(out))
  assert data.name == "cifar10" and data.class_names == CIFAR10_NAMES
  np.testing.assert_array_equal(data.train_images, arrays[0])
  np.testing.assert_array_equal(data.train_labels, arrays[1])
  np.testing.assert_array_equal(data.test_images, arrays[2])
  np.testing.assert_array_equal(data.test_labels, arrays[3])


def test_image_folder_keeps_its_name_by_default(tmp_path, capsys):
  root = tmp_path / "cifar10-jpg"
  expected = write_image_folder(str(root))
  archive = tar_gz(str(root), str(tmp_path / "cifar10-jpg.tar.gz"))
  out = tmp_path / "prepared"
  assert _run(f"--source={archive}", f"--data_dir={out}") == 0
  path = sources.prepared_path(str(out), "cifar10-jpg")
  assert os.path.isfile(path)
  # Not a TFDS name, so the report points training at the file itself.
  assert f"Train with --data_dir={path}" in capsys.readouterr().out
  data = sources.load("cifar10", path)
  assert data.name == "cifar10-jpg"
  assert data.class_names == ("bird", "cat", "dog")
  np.testing.assert_array_equal(data.train_images, expected["train"][0])
  np.testing.assert_array_equal(data.test_labels, expected["test"][1])


def test_name_flag_makes_an_image_folder_the_cifar10_of_a_dir(tmp_path,
                                                              capsys):
  root = tmp_path / "cifar10-jpg"
  expected = write_image_folder(str(root))
  out = tmp_path / "prepared"
  assert _run(f"--source={root}", f"--data_dir={out}", "--name=cifar10") == 0
  assert f"--dataset=cifar10 --data_dir={out}" in capsys.readouterr().out
  data = sources.load("cifar10", str(out))
  assert data.name == "cifar10"
  np.testing.assert_array_equal(data.train_images, expected["train"][0])
  np.testing.assert_array_equal(data.train_labels, expected["train"][1])


def test_a_second_run_replaces_the_file(tmp_path):
  out = tmp_path / "prepared"
  for seed in (1, 2):
    src = tmp_path / f"src{seed}"
    write_cifar10_python(str(src), seed=seed)
    assert _run(f"--source={src}", f"--data_dir={out}") == 0
  data = sources.load("cifar10", str(out))
  _, arrays = write_cifar10_python(str(tmp_path / "check"), seed=2)
  np.testing.assert_array_equal(data.train_images, arrays[0])
  assert os.listdir(out) == ["fastcifar-cifar10.npz"]  # no temporary left


def test_download_goes_through_tfds(tmp_path, monkeypatch, capsys):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tfds_source, "_check_network", lambda *args: None)
  out = tmp_path / "new" / "tfds"
  with tfds.testing.mock_data(num_examples=4):
    assert _run("--download", "--dataset=cifar100", f"--data_dir={out}") == 0
  report = capsys.readouterr().out
  assert f"cifar100 is in {out}" in report
  assert "4 train and 4 test images, 100 classes" in report
  assert out.is_dir()


def test_download_without_network(tmp_path, monkeypatch, capsys):
  def unreachable(*args, **kwargs):
    raise OSError("Network is unreachable")
  monkeypatch.setattr(tfds_source.socket, "create_connection", unreachable)
  assert _run("--download", f"--data_dir={tmp_path}") == 2
  message = _error(capsys)
  assert "cannot download cifar10: no network" in message
  assert "--dataset=synthetic" in message


@pytest.mark.parametrize("args,expected", [
    ((), "--data_dir is required"),
    (("--data_dir=x",), "nothing to do: pass --source=PATH"),
    (("--data_dir=x", "--source=y", "--download"), "not both"),
    (("--data_dir=x", "--download", "--name=z"), "--name applies to --source"),
    (("--data_dir=x", "--dataset=mnist"), "value should be one of"),
    (("--data_dir=x", "--no_such_flag"), "Unknown command line flag"),
    (("--data_dir=x", "stray"), "unexpected arguments ['stray']"),
])
def test_bad_flags(capsys, args, expected):
  assert _run(*args) == 2
  assert expected in _error(capsys)


def test_bad_sources_name_the_flag(tmp_path, capsys):
  out = str(tmp_path / "out")
  assert _run(f"--source={tmp_path / 'missing'}", f"--data_dir={out}") == 2
  assert _error(capsys).startswith(
      f"--source={tmp_path / 'missing'} does not exist; expected")
  (tmp_path / "empty").mkdir()
  assert _run(f"--source={tmp_path / 'empty'}", f"--data_dir={out}") == 2
  assert "is empty" in _error(capsys)
  assert not os.path.exists(out)  # nothing written on failure


def test_bad_image_is_reported_on_one_line(tmp_path, capsys):
  write_image_folder(str(tmp_path / "imgs"))
  (tmp_path / "imgs" / "test" / "cat" / "000.png").write_bytes(b"garbage")
  assert _run(f"--source={tmp_path / 'imgs'}", f"--data_dir={tmp_path}") == 2
  assert "test/cat/000.png is not a readable PNG or JPEG" in _error(capsys)


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", ""])
def test_name_must_be_a_plain_file_name(tmp_path, capsys, name):
  write_cifar10_python(str(tmp_path / "src"))
  assert _run(f"--source={tmp_path / 'src'}", f"--data_dir={tmp_path}",
              f"--name={name}") == 2
  assert f"--name={name!r} must be letters, digits" in _error(capsys)
  assert not (tmp_path.parent / "fastcifar-evil.npz").exists()
  assert not any(f.endswith(".npz") for f in os.listdir(tmp_path))


@pytest.mark.parametrize("file_format", ["npz", "shards"])
def test_an_unreadable_source_file_is_named(tmp_path, capsys, monkeypatch,
                                            file_format):
  # Was an UnboundLocalError traceback (npz), or "cannot write" blaming the
  # writable output folder (shards).
  write_image_folder(str(tmp_path / "imgs"))
  unreadable = tmp_path / "imgs" / "train" / "cat" / "001.png"

  def refusing_open(file, *args, **kwargs):
    if os.fspath(file) == str(unreadable):  # as chmod 000 for a non-root user
      raise PermissionError(13, "Permission denied", str(file))
    return open(file, *args, **kwargs)

  monkeypatch.setattr(sources.files, "open", refusing_open, raising=False)
  out = tmp_path / "out"
  assert _run(f"--source={tmp_path / 'imgs'}", f"--data_dir={out}",
              f"--format={file_format}") == 2
  assert _error(capsys) == (
      f"cannot read {unreadable} (Permission denied); make it readable or "
      "remove it from the source")
  assert not out.exists()  # nothing half-written, not even the folder


def test_unwritable_data_dir(tmp_path, capsys):
  write_cifar10_python(str(tmp_path / "src"))
  blocker = tmp_path / "a-file"
  blocker.write_text("")
  assert _run(f"--source={tmp_path / 'src'}", f"--data_dir={blocker}") == 2
  assert f"cannot write {blocker}" in _error(capsys)


def test_help(capsys):
  assert _run("--help") == 0
  out = capsys.readouterr().out
  assert "--source" in out and "--download" in out and "--name" in out


def _command(args, cwd):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=120,
                        check=False)


def test_script_error_is_one_line_and_exit_2(tmp_path):
  # From another directory, so `import fastcifar` relies on the script adding
  # the repository root itself.
  result = _command([SCRIPT, f"--source={tmp_path / 'missing'}",
                     f"--data_dir={tmp_path}"], cwd=str(tmp_path))
  assert result.returncode == 2
  assert result.stdout == ""
  assert result.stderr.splitlines() == [
      f"prepare_data: error: --source={tmp_path / 'missing'} does not exist; "
      f"expected {sources.EXPECTED}"]


def test_module_run_prepares(tmp_path):
  original = sources.load_synthetic(num_train=20, num_test=10, seed=4)
  source = str(tmp_path / "fastcifar-synthetic.npz")
  sources.save_prepared(original, source)
  out = tmp_path / "out"
  result = _command(["-m", "tools.prepare_data", f"--source={source}",
                     f"--data_dir={out}", "--name=cifar10"], cwd=REPO)
  assert result.returncode == 0, result.stderr
  assert "wrote" in result.stdout
  data = sources.load("cifar10", str(out))
  np.testing.assert_array_equal(data.train_images, original.train_images)


def test_image_size_resizes_a_mixed_folder_once(tmp_path, capsys):
  # pylint: disable-next=g-import-not-at-top
  from tests.data.test_images import write_sized_folder
  write_sized_folder(str(tmp_path / "photos"), [(64, 64), (40, 90)])
  assert _run(f"--source={tmp_path / 'photos'}", f"--data_dir={tmp_path}",
              "--image_size=24,16", "--resize=pad") == 0
  assert "8 train and 4 test images, 2 classes (a, b), 24x16x3 pixels" in (
      capsys.readouterr().out)
  data = sources.load_path(str(tmp_path / "fastcifar-photos.npz"))
  assert data.train_images.shape == (8, 24, 16, 3)
  assert _run(f"--source={tmp_path / 'photos'}", f"--data_dir={tmp_path}",
              "--image_size=big") == 2
  assert "--image_size=big" in _error(capsys)


def test_shards_format_writes_a_folder_training_streams(tmp_path, capsys):
  root = tmp_path / "cifar10-jpg"
  expected = write_image_folder(str(root))
  archive = tar_gz(str(root), str(tmp_path / "cifar10-jpg.tar.gz"))
  out = tmp_path / "prepared"
  assert _run(f"--source={archive}", f"--data_dir={out}", "--name=cifar10",
              "--format=shards") == 0
  path = sources.shards_path(str(out), "cifar10")
  report = capsys.readouterr().out
  assert f"wrote {path} (" in report
  assert f"--dataset=cifar10 --data_dir={out}" in report
  with open(os.path.join(path, "fastcifar-shards.json")) as f:
    manifest = json.load(f)
  assert manifest["class_names"] == ["bird", "cat", "dog"]
  assert manifest["image_shape"] == list(expected["train"][0].shape[1:])
  mean, std = pipeline.channel_stats(expected["train"][0])
  np.testing.assert_allclose(manifest["mean"], mean)
  np.testing.assert_allclose(manifest["std"], std)
  assert sum(manifest["splits"]["train"]["counts"]) == len(
      expected["train"][0])

  streamed = sources.load("cifar10", str(out), cache="disk")
  assert isinstance(streamed.train_images, sources.ShardedImages)
  np.testing.assert_array_equal(np.asarray(streamed.train_images),
                                expected["train"][0])
  np.testing.assert_array_equal(streamed.train_labels, expected["train"][1])
  np.testing.assert_array_equal(streamed.test_images, expected["test"][0])
  in_memory = sources.load("cifar10", str(out), cache="memory")
  np.testing.assert_array_equal(in_memory.train_images, expected["train"][0])

  # A second run replaces the folder and leaves no temporary behind.
  assert _run(f"--source={archive}", f"--data_dir={out}", "--name=cifar10",
              "--format=shards") == 0
  assert os.listdir(out) == ["fastcifar-cifar10"]


def test_shards_of_files_larger_than_any_cap(tmp_path, monkeypatch):
  # Whatever cap on the files' total (4 GiB; here a few kB): nothing is held.
  root = tmp_path / "src"
  expected = write_image_folder(str(root))
  monkeypatch.setattr(sources.files, "MAX_TOTAL_BYTES", 1000, raising=False)
  monkeypatch.setattr(sources.image_folder, "available_memory", lambda: 1000)
  out = tmp_path / "prepared"
  assert _run(f"--source={root}", f"--data_dir={out}", "--format=shards") == 0
  streamed = sources.load("cifar10", sources.shards_path(str(out), "src"),
                          cache="disk")
  np.testing.assert_array_equal(np.asarray(streamed.train_images),
                                expected["train"][0])


def test_damaged_shards_fail_in_one_line(tmp_path):
  root = tmp_path / "src"
  write_image_folder(str(root))
  out = tmp_path / "prepared"
  assert _run(f"--source={root}", f"--data_dir={out}", "--format=shards") == 0
  path = sources.shards_path(str(out), "src")
  manifest = os.path.join(path, "fastcifar-shards.json")
  with open(manifest) as f:
    content = json.load(f)
  content["splits"]["train"]["files"] = ["../../etc/passwd"]
  content["splits"]["train"]["counts"] = [1]
  with open(manifest, "w") as f:
    json.dump(content, f)
  with pytest.raises(sources.UsageError, match="prepare the shards again"):
    sources.load("cifar10", path, cache="disk")
  with open(manifest, "w") as f:
    f.write("{not json")
  with pytest.raises(sources.UsageError, match="unreadable"):
    sources.load("cifar10", path)


def test_cache_disk_needs_shards_and_shards_keep_their_size(tmp_path):
  root = tmp_path / "src"
  write_image_folder(str(root))
  with pytest.raises(sources.UsageError, match="--format=shards"):
    sources.load("cifar10", str(root), cache="disk")
  out = tmp_path / "prepared"
  assert _run(f"--source={root}", f"--data_dir={out}", "--format=shards") == 0
  path = sources.shards_path(str(out), "src")
  with pytest.raises(sources.UsageError, match="prepare the shards again at"):
    sources.load("cifar10", path, image_size=(48, 48))


def test_dataset_and_parent_find_shards_prepared_under_a_longer_name(
    tmp_path, capsys):
  # docs/data.md prepares --name=cifar10-64; --dataset=cifar10 must find it.
  source = str(tmp_path / "fastcifar-cifar10.npz")
  data = sources.load_synthetic(num_train=20, num_test=10, seed=0)
  sources.save_prepared(data, source)
  out = tmp_path / "data"
  assert _run(f"--source={source}", f"--data_dir={out}", "--name=cifar10-64",
              "--format=shards") == 0
  found = sources.load("cifar10", str(out), cache="memory")
  assert found.name == "cifar10-64"
  np.testing.assert_array_equal(found.test_images, data.test_images)
  with pytest.raises(sources.UsageError, match="no dataset I recognise"):
    sources.load("cifar100", str(out), download=False)
  sources.save_prepared(data, str(out / "fastcifar-cifar10-small.npz"))
  with pytest.raises(sources.UsageError,
                     match=r"2 prepared copies of cifar10 \(fastcifar-"
                     r"cifar10-64, fastcifar-cifar10-small.npz\); pass the"):
    sources.load("cifar10", str(out))
  capsys.readouterr()


def test_git_ignores_the_data_folder_the_docs_prepare_into():
  if not os.path.isdir(os.path.join(REPO, ".git")) and not os.path.isfile(
      os.path.join(REPO, ".git")):
    pytest.skip("not a git checkout")
  def ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO,
                          check=False).returncode == 0
  assert ignored("data/fastcifar-cifar10.npz")
  assert not ignored("fastcifar/data/pipeline.py")
