import pytest
import torch

from experiments.networks import NETWORKS
from FetalBrainSegLib.models.complexity import count_macs, count_parameters
from FetalBrainSegLib.models.registry import build_model
from FetalBrainSegLib.models.rfbsnet import RFBSNet

KERAS_PARAMETERS = 2_163_384  # the authors' released Keras model


def test_parameter_count_matches_the_keras_model():
    assert count_parameters(RFBSNet()) == KERAS_PARAMETERS


def test_macs_match_the_papers_flops():
    # the paper's 5.32 GFLOPs are 2 x MACs of its 2,154,328-parameter table entry; ours: 2.80 GMAC
    assert count_macs(RFBSNet()) == pytest.approx(2.8045e9, rel=1e-3)


def test_output_is_two_class_logits_at_input_resolution():
    model = RFBSNet().eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 256, 256))
    assert out.shape == (3, 2, 256, 256)
    assert torch.isfinite(out).all()


def test_no_batch_norm_in_the_faithful_model_and_only_behind_the_option():
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in RFBSNet().modules())
    normed = RFBSNet(norm="batch")
    assert (
        sum(isinstance(m, torch.nn.BatchNorm2d) for m in normed.modules()) == 16
    )  # each conv+ReLU but the downsampling one
    with pytest.raises(ValueError, match="norm"):
        RFBSNet(norm="layer")


def test_registry_builds_by_name_and_rejects_unknown_names():
    assert isinstance(build_model("RFBSNet"), RFBSNet)
    with pytest.raises(ValueError, match="unknown model 'unet3d'"):
        build_model("unet3d")


@pytest.mark.parametrize(
    "name,paper_gflops",
    [("unet", 102), ("segnet", 79.9), ("shuffleseg", None), ("shufflesegv2", None), ("dfanet", None)],
)
def test_comparison_networks_reproduce_the_papers_table(name, paper_gflops):
    from experiments.networks import PAPER_PARAMETERS

    model = build_model(name).eval()
    assert count_parameters(model) == PAPER_PARAMETERS[name]  # exact, as in Keras
    if paper_gflops:  # the paper states FLOPs for these two only
        assert 2 * count_macs(model) / 1e9 == pytest.approx(paper_gflops, rel=0.01)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 256, 256)).shape == (1, 2, 256, 256)


@pytest.mark.parametrize(
    "name", ["unet", "segnet", "shuffleseg", "shufflesegv2", "enet", "fastscnn", "icnet", "dfanet"]
)
def test_every_comparison_network_is_within_5_percent_of_the_paper_or_says_why(name):
    from experiments.networks import DEVIATIONS, PAPER_PARAMETERS

    model = build_model(name).eval()
    ratio = count_parameters(model) / PAPER_PARAMETERS[name]
    assert abs(ratio - 1) <= 0.05 or name in DEVIATIONS
    with torch.no_grad():
        out = model(torch.randn(2, 1, 256, 256))
    assert out.shape == (2, 2, 256, 256) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["rfbsnet", *sorted(NETWORKS)])
def test_every_model_trains_in_the_trainers_cpu_layout(name):
    """A training step as Trainer takes it on CPU (channels-last memory, bf16 autocast) gives finite gradients
    (torch's CPU backward once crashed on DFANet's strided 1x1 shortcut in this layout)."""
    torch.manual_seed(0)
    model = build_model(name).to(memory_format=torch.channels_last)
    images = torch.randn(2, 1, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
    logits.float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
