"""The shared argument checks, the one config base of the training loops, and the one table of
normalisation layer types."""

import pytest
import torch
from torch import nn

import bnlib
from bnlib._checks import require_choice, require_int, require_int_type, require_number
from bnlib.nn.registry import ANY_BATCH_NORM_TYPES, FOLDABLE_TYPES, RECOMPUTABLE_TYPES
from bnlib.training import LoopConfig, SweepConfig, TrainConfig


@pytest.mark.parametrize("value", [True, 1.0, "3", None, 1])
def test_require_int_refuses_bools_floats_and_small_values(value):
    with pytest.raises(ValueError, match=r"^n must be an int >= 2 \(why\), got "):
        require_int("n", value, 2, " (why)")


def test_require_int_accepts_an_int_and_words_a_message_its_callers_way():
    require_int("n", 2, 2)
    with pytest.raises(ValueError, match="^custom$"):
        require_int("n", False, 0, message="custom")


def test_require_int_type_and_require_number_raise_type_errors_for_other_types():
    require_int_type("n", 3)
    with pytest.raises(TypeError, match="^n must be an int, got bool$"):
        require_int_type("n", True)
    with pytest.raises(TypeError, match="^x must be a number, got str$"):
        require_number("x", "1", 0, 1)
    with pytest.raises(ValueError, match=r"^x must be a finite number in \(0, 1\], got 0$"):
        require_number("x", 0, 0, 1, low_open=True)
    with pytest.raises(ValueError, match="finite"):
        require_number("x", float("nan"), 0, 1)


def test_require_choice_lists_the_choices():
    require_choice("kind", "b", ("a", "b", "c"))
    with pytest.raises(ValueError, match="^kind must be 'a', 'b' or 'c', got 'd'$"):
        require_choice("kind", "d", ("a", "b", "c"))
    with pytest.raises(ValueError, match="^optimizer must be 'adam' or 'sgd', got 'lion'$"):
        require_choice("optimizer", "lion", ("adam", "sgd"))


@pytest.mark.parametrize("config_class", [TrainConfig, SweepConfig])
def test_both_configs_check_the_shared_settings_alike(config_class):
    assert issubclass(config_class, LoopConfig)
    for changes, words in [({"epochs": 0}, "epochs must be an int >= 1"),
                           ({"batch_size": 1}, "batch_size must be an int >= 2"),
                           ({"optimizer": "lion"}, "optimizer must be 'adam' or 'sgd'"),
                           ({"momentum": 1.0}, "momentum must be in [0, 1)"),
                           ({"device": "foo"}, "'foo' is not a torch device"),
                           ({"device": "meta"}, "device 'meta' is not available here")]:
        with pytest.raises(ValueError) as error:
            config_class(**changes)
        assert words in str(error.value)


def test_a_device_this_machine_lacks_is_refused_when_the_config_is_made():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for config_class in (TrainConfig, SweepConfig):
        with pytest.raises(ValueError, match="device 'cuda' is not available here"):
            config_class(device="cuda")


BN_LAYERS = [bnlib.BatchNorm1d(3), bnlib.BatchNorm2d(3), bnlib.GhostBatchNorm(3, 2),
             bnlib.SyncBatchNorm(3), bnlib.BatchRenorm1d(3), bnlib.BatchRenorm2d(3),
             nn.BatchNorm1d(3), nn.BatchNorm2d(3), nn.BatchNorm3d(3), nn.SyncBatchNorm(3)]


@pytest.mark.parametrize("layer", BN_LAYERS, ids=lambda layer: type(layer).__module__ + "." +
                         type(layer).__name__)
def test_every_bn_layer_is_in_the_table_and_every_tool_agrees(layer):
    assert isinstance(layer, ANY_BATCH_NORM_TYPES)
    assert isinstance(layer, FOLDABLE_TYPES)
    recomputable = isinstance(layer, RECOMPUTABLE_TYPES)
    assert recomputable is not isinstance(layer, (bnlib.BatchRenorm1d, bnlib.BatchRenorm2d))
    model = nn.Sequential(layer)
    assert bnlib.set_batchnorm_eval(model.train()) is model and not layer.training
    assert (bnlib.batch_norm_layers(model) == [layer]) is recomputable
