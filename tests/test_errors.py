"""Errors name the problem and the user's line, happen before weights load where possible, and leave no hook behind."""

from __future__ import annotations

import re
import traceback

import pytest
import torch
from conftest import hook_count

from ndif_jupyter import ExecutionError, Model, TraceError, ValueNotReadyError

PROMPT = "The Eiffel Tower is in the city of"


def _line_of(marker: str) -> int:
    with open(__file__) as handle:
        for number, line in enumerate(handle, start=1):
            if marker in line and "_line_of" not in line:
                return number
    raise LookupError(marker)


def test_a_wrong_module_name_lists_the_close_names(gpt2: Model):
    with pytest.raises(AttributeError) as caught:
        gpt2.transformer.hh
    message = str(caught.value)
    assert "`hh`" in message and "Did you mean `h`" in message and "wte" in message
    with pytest.raises(AttributeError, match="Did you mean `mlp`"):
        gpt2.transformer.h[0].mpl
    with pytest.raises(IndexError, match="has 4 modules"):
        gpt2.transformer.h[4]


def test_negative_indices_and_slices_address_the_right_modules(gpt2: Model):
    assert gpt2.transformer.h[-1].path == "transformer.h.3"
    assert [envoy.path for envoy in gpt2.transformer.h[1:3]] == ["transformer.h.1", "transformer.h.2"]
    assert len(gpt2.transformer.h) == 4
    assert "GPT2Block" in repr(gpt2.transformer.h[0])


def test_a_shape_error_is_raised_at_the_users_line_before_weights_load(gpt2: Model):
    with pytest.raises(TraceError) as caught:
        with gpt2.trace(PROMPT):
            h = gpt2.transformer.h[0].output
            h + torch.zeros(1, 3, 64)  # the shape error
    error = caught.value
    assert error.source.lineno == _line_of("# the shape error")
    assert error.source.filename == __file__
    assert "[1, 8, 64]" in str(error) and "[1, 3, 64]" in str(error)
    frames = traceback.extract_tb(error.__traceback__)
    assert any(frame.filename == __file__ and frame.lineno == _line_of("# the shape error") for frame in frames)
    assert gpt2.local_model is None


def test_reading_value_inside_the_block_says_when_it_will_exist(gpt2: Model):
    with gpt2.trace(PROMPT):
        h = gpt2.transformer.h[0].output.save()
        with pytest.raises(ValueNotReadyError, match=r"read `\.value` after the block|Read `\.value` after the block"):
            h.value
    assert h.value.shape == (1, 8, 64)


def test_a_value_that_was_not_saved_says_so(gpt2: Model):
    with gpt2.trace(PROMPT):
        h = gpt2.transformer.h[0].output
    with pytest.raises(ValueNotReadyError, match="not saved"):
        h.value


def test_next_past_the_last_token_is_refused(gpt2: Model):
    with pytest.raises(TraceError, match="max_new_tokens=2") as caught:
        with gpt2.generate(max_new_tokens=2) as generator:
            with generator.invoke(PROMPT) as invoker:
                invoker.next()
                invoker.next()  # one too many
    assert caught.value.source.lineno == _line_of("# one too many")
    assert gpt2.local_model is None


def test_next_in_a_trace_is_refused(gpt2: Model):
    with pytest.raises(TraceError, match="one forward pass"):
        with gpt2.trace(PROMPT) as tracer:
            tracer.next()


def test_an_exception_in_the_block_runs_nothing_and_leaves_no_hooks(gpt2: Model):
    with gpt2.trace(PROMPT):
        before = gpt2.lm_head.output.save()
    with pytest.raises(ZeroDivisionError):
        with gpt2.trace(PROMPT):
            gpt2.transformer.h[0].output[:] = 0
            kept = gpt2.lm_head.output.save()
            1 / 0
    assert hook_count(gpt2.local_model) == 0
    with pytest.raises(ValueNotReadyError, match="the block raised an error"):
        kept.value
    with gpt2.trace(PROMPT):
        after = gpt2.lm_head.output.save()
    assert torch.equal(before.value, after.value)


def test_a_failure_while_running_leaves_no_hooks_and_the_model_unchanged(gpt2: Model):
    with gpt2.trace(PROMPT):
        before = gpt2.lm_head.output.save()
    with pytest.raises(ExecutionError) as caught:
        with gpt2.trace(PROMPT):
            gpt2.transformer.h[0].output[:] = 0
            h = gpt2.transformer.h[1].output
            h[:, torch.tensor([100])].save()  # out of range only with real values
    assert caught.value.source.lineno == _line_of("# out of range only with real values")
    assert "index 100 is out of range for dimension 1" in str(caught.value)
    assert hook_count(gpt2.local_model) == 0
    with gpt2.trace(PROMPT):
        after = gpt2.lm_head.output.save()
    assert torch.equal(before.value, after.value)


def test_setting_a_module_from_a_later_module_is_refused(gpt2: Model):
    with pytest.raises(TraceError, match="only after"):
        with gpt2.trace(PROMPT):
            gpt2.transformer.h[0].output = gpt2.transformer.h[2].output


def test_setting_a_value_of_the_wrong_shape_is_refused(gpt2: Model):
    with pytest.raises(TraceError, match=r"shape \[1, 3, 64\]"):
        with gpt2.trace(PROMPT):
            gpt2.transformer.h[0].output = torch.zeros(1, 3, 64)


def test_module_values_outside_a_block_are_refused(gpt2: Model):
    with pytest.raises(TraceError, match="only inside"):
        gpt2.transformer.h[0].output


def test_module_values_outside_an_invoke_are_refused(gpt2: Model):
    with pytest.raises(TraceError, match="no invoke is open"):
        with gpt2.generate(max_new_tokens=1):
            gpt2.transformer.h[0].output


def test_operations_outside_the_allowlist_are_refused(gpt2: Model):
    with pytest.raises(TraceError, match="not an operation"):
        with gpt2.trace(PROMPT):
            torch.fft.fft(gpt2.transformer.h[0].output)
    with pytest.raises(AttributeError, match="not a tensor method"):
        with gpt2.trace(PROMPT):
            gpt2.transformer.h[0].output.register_hook


def test_python_control_flow_on_traced_values_is_refused(gpt2: Model):
    with pytest.raises(TraceError, match="no truth value"):
        with gpt2.trace(PROMPT):
            if gpt2.transformer.h[0].output.sum() > 0:
                pass


def test_blocks_on_one_model_cannot_nest(gpt2: Model):
    with pytest.raises(TraceError, match="already open"):
        with gpt2.trace(PROMPT):
            with gpt2.trace(PROMPT):
                pass
    with gpt2.trace(PROMPT):
        gpt2.lm_head.output.save()


def test_a_block_without_prompt_is_refused(gpt2: Model):
    with pytest.raises(TraceError, match="no prompt"):
        with gpt2.generate(max_new_tokens=1):
            pass


def test_an_unknown_model_gives_a_clear_error(tmp_path, monkeypatch):
    from ndif_jupyter import NDIFError

    monkeypatch.setenv("NDIF_CHECKPOINTS", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(NDIFError, match="Could not find the model 'no-such/model'") as error:
        Model("no-such/model")
    assert "checkpoint cache holds" not in str(error.value) and "Did you mean" not in str(error.value)


def test_a_mistyped_model_name_gets_the_close_names_in_the_cache(tmp_path, monkeypatch, gpt2_dir):
    import shutil

    from ndif_jupyter import NDIFError
    from ndif_jupyter.loading.checkpoints import cached_folder

    monkeypatch.setenv("NDIF_CHECKPOINTS", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    shutil.copytree(gpt2_dir, cached_folder("acme/tiny-gpt2"))
    assert Model("acme/tiny-gpt2").config.n_layer == 4
    with pytest.raises(NDIFError, match="Did you mean 'acme/tiny-gpt2'"):
        Model("acme/tiny-gtp2")
    with pytest.raises(NDIFError, match="The checkpoint cache holds 'acme/tiny-gpt2'"):
        Model("other/thing")


def test_nothing_of_a_run_stays_alive_after_it(gpt2: Model):
    import gc
    import weakref

    with gpt2.trace(PROMPT):
        gpt2.lm_head.output.save()
    seen = []
    handle = gpt2.local_model.lm_head.register_forward_hook(lambda m, a, out: seen.append(weakref.ref(out)))
    try:
        with gpt2.trace(PROMPT):
            kept = gpt2.lm_head.output.save()
        with pytest.raises(ExecutionError):
            with gpt2.trace(PROMPT):
                gpt2.lm_head.output.save()
                gpt2.lm_head.output[:, torch.tensor([100])].save()
    finally:
        handle.remove()
    gc.collect()
    assert len(seen) == 2
    assert all(ref() is None for ref in seen), "a run left the model's output tensor referenced"
    assert kept.value.shape[1] == 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_gpu_on_a_machine_without_one_fails_when_the_block_opens(gpt2: Model):
    from ndif_jupyter import NDIFError

    with pytest.raises(NDIFError, match="needs a CUDA GPU"):
        gpt2.generate(device_map="cuda", max_new_tokens=1)
    assert gpt2.local_model is None


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("generate", {"max_new_tokens": 0}, "max_new_tokens=0: it must be an integer of at least 1"),
        ("generate", {"max_new_tokens": 4, "temperature": -1.0}, "temperature=-1.0: it must be between 0.0 and inf"),
        ("generate", {"max_new_tokens": 2, "min_new_tokens": 5}, "min_new_tokens=5 is more than max_new_tokens=2"),
        ("generate", {"max_new_tokens": 2, "suppress_tokens": [10**6]}, "token ids must be integers from 0 to"),
        ("trace", {"output_attentions": "yes"}, "output_attentions='yes': it must be true or false"),
    ],
)
def test_option_values_are_checked_at_the_blocks_line_before_any_weights_load(gpt2: Model, kind, options, message):
    opened = gpt2.generate if kind == "generate" else gpt2.trace
    with pytest.raises(TraceError, match=re.escape(message)) as error:
        with opened(**options) as block:
            with block.invoke(PROMPT):
                pass
    assert error.value.source is not None and "opened(**options)" in error.value.source.line
    assert gpt2.local_model is None, "nothing was loaded"
