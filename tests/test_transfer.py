"""The shipped pretrained backbone (models/zoo-fmnist-resnet) and the pieces of the demo."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zoo

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "zoo-fmnist-resnet"


def test_shipped_backbone_loads_identically_in_zoo_and_plain_timm():
    import timm

    plain = timm.create_model(f"local-dir:{SHIPPED}", pretrained=True).eval()
    model, _transform, classes = zoo.load("local-dir:" + str(SHIPPED))
    assert classes[:2] == ["T-shirt/top", "Trouser"] and len(classes) == 10
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(plain(x), model(x))
    info = zoo.info("zoo-fmnist-resnet")
    assert info["source"] == f"local-dir:{SHIPPED}" and info["input_size"] == [3, 32, 32] and info["pretrain"] == "fashion-mnist"
    card = (SHIPPED / "README.md").read_text()
    assert "Fashion-MNIST test top-1" in card and "zoo finetune test_resnet --data fashion-mnist --no-pretrained" in card


def test_demo_pieces_head_only_transfer_to_digits(tmp_path):
    shipped = load_file(SHIPPED / "model.safetensors")
    result = zoo.finetune("zoo-fmnist-resnet", data="digits", out=tmp_path / "r", freeze="head-only", shots=3, val_split=0.3,
                          epochs=2, batch_size=16, img_size=32, aug="light", seed=0)
    after = load_file(tmp_path / "r" / "model.safetensors")
    # The backbone is Fashion-MNIST's, bit for bit; the head is new because the classes differ.
    assert all(torch.equal(shipped[k].float(), after[k]) for k in shipped if not k.startswith("fc."))
    assert json.loads((tmp_path / "r" / "config.json").read_text())["label_names"] == [str(d) for d in range(10)]
    assert result.metrics["images"] == 539 and set(result.metrics["per_class"]) == {str(d) for d in range(10)}


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def fashion_mnist_subset(root: Path, train: int, test: int) -> Path:
    """The first ``train`` and ``test`` images of Fashion-MNIST's two splits, as IDX files (the format, fewer images)."""
    import gzip

    root.mkdir()
    for prefix, count in (("train", train), ("t10k", test)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            data = gzip.decompress((FASHION_MNIST.parent / f"{prefix}-{kind}.gz").read_bytes())
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
            size = 1
            for d in dims[1:]:
                size *= d
            header = data[:4] + count.to_bytes(4, "big") + data[8 : 4 + 4 * ndim]
            (root / f"{prefix}-{kind}").write_bytes(header + data[4 + 4 * ndim : 4 + 4 * ndim + count * size])
    return root


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")
def test_compare_ranks_pretrained_above_random_init(tmp_path):
    """On Fashion-MNIST the shipped backbone's features are known to be better than random ones
    (on the digits they are not: see docs/results.md)."""
    import timm
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    torch.manual_seed(0)
    random = timm.create_model("test_resnet", num_classes=10, layers=[2, 2, 2, 2], channels=[32, 64, 128, 256])
    (tmp_path / "random").mkdir()
    save_file(random.state_dict(), tmp_path / "random" / "model.safetensors")
    save_config_for_hf(random, str(tmp_path / "random" / "config.json"), data_config={"input_size": (3, 32, 32)})
    from zoo.compare import compare

    # 2,000 of the 10,000 test images score the probes (the whole set took most of this test's time)
    data = fashion_mnist_subset(tmp_path / "fmnist", train=6000, test=2000)
    ranked = compare(["zoo-fmnist-resnet", f"local-dir:{tmp_path / 'random'}"], data_spec=f"fashion-mnist:{data}", shots=10,
                     img_size=32)
    assert next(c.name for c in ranked) == "zoo-fmnist-resnet"
    assert ranked[0].top1 > ranked[1].top1 + 0.1
