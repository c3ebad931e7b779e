"""The image cache's tars leave out the layers of the images always loaded before them (the lab's
base and node): tests/engine/images.py's strip_layers on a tar laid out as `docker save` writes it.
(That such a tar loads in a real engine is what the compose tier does with the app, HA and
single-user images at every start.)"""
from __future__ import annotations

import io
import json
import tarfile

from engine.images import strip_layers


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", directory: bool = False) -> None:
    info = tarfile.TarInfo(name)
    if directory:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def saved(path, layers: "list[str]", repo_tag: str = "pglab/crypto-app:test"):
    """A `docker save` tar of one image whose layers (bottom first) have these diff IDs."""
    with tarfile.open(path, "w") as tar:
        dirs = [f"{d * 8}" for d in layers]
        for d, content in zip(dirs, layers):
            _add(tar, d, directory=True)
            _add(tar, f"{d}/VERSION", b"1.0")
            _add(tar, f"{d}/json", b"{}")
            _add(tar, f"{d}/layer.tar", content.encode() * 1000)
        config = {"rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in layers]}}
        _add(tar, "cfg.json", json.dumps(config).encode())
        _add(tar, "manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": [repo_tag],
                                                "Layers": [f"{d}/layer.tar" for d in dirs]}]).encode())
    return dirs


def names(path) -> "set[str]":
    with tarfile.open(path) as tar:
        return set(tar.getnames())


def test_the_base_layers_are_left_out_and_everything_else_kept(tmp_path):
    dirs = saved(tmp_path / "app.tar", ["a", "b", "c"])
    dropped = strip_layers(tmp_path / "app.tar", tmp_path / "slim.tar", [["sha256:a"], ["sha256:a", "sha256:n"]])
    assert dropped == {dirs[0]}
    kept = names(tmp_path / "slim.tar")
    assert not {n for n in kept if n.split("/")[0] == dirs[0]}
    assert {"manifest.json", "cfg.json", f"{dirs[1]}/layer.tar", f"{dirs[2]}/layer.tar"} <= kept
    with tarfile.open(tmp_path / "slim.tar") as tar:  # what is kept is whole
        assert tar.extractfile(f"{dirs[2]}/layer.tar").read() == b"c" * 1000
        assert json.load(tar.extractfile("manifest.json"))[0]["Layers"] == [f"{d}/layer.tar" for d in dirs]


def test_an_image_on_the_node_image_leaves_out_the_node_layers_too(tmp_path):
    dirs = saved(tmp_path / "ha.tar", ["a", "n", "h"])
    assert strip_layers(tmp_path / "ha.tar", tmp_path / "slim.tar",
                        [["sha256:a", "sha256:n"], ["sha256:a"]]) == {dirs[0], dirs[1]}


def test_an_image_on_another_base_is_copied_whole(tmp_path):
    saved(tmp_path / "other.tar", ["x", "y"])
    assert strip_layers(tmp_path / "other.tar", tmp_path / "slim.tar", [["sha256:a"]]) == set()
    assert not (tmp_path / "slim.tar").exists()
