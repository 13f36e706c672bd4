"""Model registry: output shapes, parameter counts, input kinds, bad names."""

import pytest
import torch

from elfs.models import MODEL_INPUTS, build_model


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("hw,cin", [(8, 1), (28, 1), (32, 3)])
def test_small_cnn_shapes_and_backward(hw, cin):
    torch.manual_seed(0)
    m = build_model("small_cnn", num_classes=7, in_channels=cin, width=8)
    x = torch.randn(4, cin, hw, hw)
    out = m(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_small_cnn_width_scales_parameters():
    assert _n_params(build_model("small_cnn", num_classes=10, width=16)) > 3 * _n_params(
        build_model("small_cnn", num_classes=10, width=8)
    )


def test_mlp_shapes_and_structure():
    m = build_model("mlp", num_classes=5, in_dim=12, width=20)
    assert m(torch.randn(6, 12)).shape == (6, 5)
    # Linear(12,20) + BN(20) + Linear(20,5)
    assert _n_params(m) == 12 * 20 + 20 + 2 * 20 + 20 * 5 + 5


def test_resnet18_cifar_parameter_count_and_shape():
    m = build_model("resnet18_cifar", num_classes=10)
    assert _n_params(m) == 11_173_962
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules())
    m.eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    m1 = build_model("resnet18_cifar", num_classes=100, in_channels=1).eval()
    assert m1(torch.randn(1, 1, 16, 16)).shape == (1, 100)
    assert _n_params(m1) == 11_173_962 - 2 * 64 * 9 + 90 * 513


def test_resnet34_torchvision():
    m = build_model("resnet34", num_classes=1000)
    assert _n_params(m) == 21_797_672  # torchvision's published ResNet-34 size
    m = build_model("resnet34", num_classes=6, in_channels=1).eval()
    assert m(torch.randn(1, 1, 64, 64)).shape == (1, 6)


def test_model_inputs_cover_registry():
    assert MODEL_INPUTS == {
        "small_cnn": "images",
        "mlp": "embeddings",
        "resnet18_cifar": "images",
        "resnet34": "images",
    }


def test_same_seed_same_init():
    torch.manual_seed(3)
    a = build_model("small_cnn", num_classes=3, width=4)
    torch.manual_seed(3)
    b = build_model("small_cnn", num_classes=3, width=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="resnet18_cifar"):
        build_model("resnet19", num_classes=10)
    with pytest.raises(ValueError, match="in_dim"):
        build_model("mlp", num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("small_cnn", num_classes=0)


def test_resnet34_pools_without_adaptive_pooling_and_computes_the_same():
    """torchvision's AdaptiveAvgPool2d has no deterministic CUDA backward (trainer.deterministic=true would raise on a
    GPU): the mean over H, W replaces it, with the same forward result."""
    import torch

    from elfs.models import build_model

    model = build_model("resnet34", num_classes=10)
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules())
    x = torch.randn(2, 512, 7, 5)
    torch.testing.assert_close(model.avgpool(x), torch.nn.AdaptiveAvgPool2d((1, 1))(x))
