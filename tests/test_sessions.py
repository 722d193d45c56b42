"""Sessions: `with model.session():` runs its blocks together at its end, in order, as one request; a later block uses
an earlier block's values (saved or not) without their coming back to the kernel, equal to plain hooks."""

from __future__ import annotations

import pytest
import torch

from ndif_jupyter import Model
from ndif_jupyter.errors import ExecutionError, TraceError, ValueNotReadyError
from ndif_jupyter.execution.session import execute_session
from ndif_jupyter.ir.session import SESSION_VALUE, Session
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"
OTHER = "Hello world"
NEW_TOKENS = 4


def layer_paths(model: Model) -> list[str]:
    prefix = "transformer.h" if hasattr(model.config, "n_layer") else "model.layers"
    return [f"{prefix}.{index}" for index in range(3)]


def steered_session(model: Model) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """A direction from one trace, steering every step of a generation, and a value of that generation patched into
    a last trace: no value of the first two blocks is saved."""
    first, second, _ = (model.module(path) for path in layer_paths(model))
    with model.session():
        with model.trace(PROMPT):
            direction = first.output[0, -1] - first.output[0, 0]
            norm = direction.norm()
        with model.generate(max_new_tokens=NEW_TOKENS, do_sample=False) as generator:
            with generator.invoke(OTHER):
                steered = []
                for step in generator.steps:
                    first.output[:, -1] += direction / norm
                    steered.append(second.output[:, -1].save())
                    if step == 0:
                        reached = second.output[:, -1]
        with model.trace(OTHER):
            second.output[:, -1] = reached
            logits = model.lm_head.output.save()
    return generator.output, [value.value for value in steered], logits.value


def steered_with_hooks(model: Model, folder) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The same three runs with plain forward hooks on a separately loaded model."""
    first, second, _ = layer_paths(model)
    plain = reference.load(folder)
    with reference.capture(plain, [first]) as seen:
        reference.forward_logits(plain, model.tokenizer(PROMPT)["input_ids"])
    hidden = seen[first][0]
    direction = hidden[0, -1] - hidden[0, 0]
    unit = direction / direction.norm()

    def steer(path, output):
        if path != first:
            return None
        output = output.clone()
        output[:, -1] += unit
        return output

    ids = model.tokenizer(OTHER)["input_ids"]
    with reference.capture(plain, [first, second], edit=steer) as seen:
        tokens = reference.greedy(plain, ids, NEW_TOKENS, model.loaded.pad_token_id)
    steered = [output[:, -1] for output in seen[second]]

    def patch(path, output):
        if path != second:
            return None
        output = output.clone()
        output[:, -1] = steered[0]
        return output

    with reference.capture(plain, [second], edit=patch):
        logits = reference.forward_logits(plain, ids)
    return tokens, steered, logits


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_values_flow_from_block_to_block_as_plain_hooks_compute_them(name, request):
    model = request.getfixturevalue(name)
    tokens, steered, logits = steered_session(model)
    expected_tokens, expected_steered, expected_logits = steered_with_hooks(
        model, request.getfixturevalue(f"{name}_dir")
    )
    assert torch.equal(tokens, expected_tokens)
    assert len(steered) == NEW_TOKENS
    for mine, theirs in zip(steered, expected_steered):
        assert torch.equal(mine, theirs)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)


def test_a_session_equals_its_blocks_run_one_by_one_with_saved_values(gpt2: Model):
    tokens, steered, logits = steered_session(gpt2)
    first, second, _ = (gpt2.module(path) for path in layer_paths(gpt2))
    with gpt2.trace(PROMPT):
        direction = (first.output[0, -1] - first.output[0, 0]).save()
    unit = direction.value / direction.value.norm()
    with gpt2.generate(max_new_tokens=NEW_TOKENS, do_sample=False) as generator:
        with generator.invoke(OTHER):
            saved = []
            for _ in generator.steps:
                first.output[:, -1] += unit
                saved.append(second.output[:, -1].save())
    with gpt2.trace(OTHER):
        second.output[:, -1] = saved[0].value
        expected = gpt2.lm_head.output.save()
    assert torch.equal(tokens, generator.output)
    assert all(torch.equal(mine, theirs.value) for mine, theirs in zip(steered, saved))
    assert torch.equal(logits, expected.value)


def test_each_block_gets_its_own_copy_of_an_earlier_value(gpt2: Model):
    first = gpt2.module(layer_paths(gpt2)[0])
    with gpt2.session():
        with gpt2.trace(PROMPT):
            hidden = first.output[0, -1]
            original = hidden.save()
        with gpt2.trace(OTHER):
            hidden[:] = 0
            zeroed = (hidden + 0).save()
        with gpt2.trace(OTHER):
            again = (hidden + 0).save()
    assert torch.count_nonzero(zeroed.value) == 0
    assert torch.equal(again.value, original.value) and torch.count_nonzero(original.value) > 0


def test_values_are_read_after_the_session_and_say_so_before(gpt2: Model):
    first = gpt2.module(layer_paths(gpt2)[0])
    with gpt2.session():
        with gpt2.trace(PROMPT):
            hidden = first.output.save()
            unsaved = first.output[0, 0]
        with pytest.raises(ValueNotReadyError, match="session") as error:
            hidden.value
        assert "after the session" in str(error.value)
        with pytest.raises(ValueNotReadyError, match="save it with"):
            unsaved.value
        with gpt2.trace(OTHER) as tracer:
            assert tracer.session is not None
            shifted = (unsaved * 2).save()
        unsaved.save()  # its block waits for the session's end, so it can still keep a value
    assert torch.equal(shifted.value, hidden.value[0, 0] * 2)
    assert torch.equal(unsaved.value, hidden.value[0, 0])


def test_operations_between_blocks_run_in_the_latest_block_they_read(gpt2: Model):
    first, second, _ = (gpt2.module(path) for path in layer_paths(gpt2))
    with gpt2.session() as session:
        with gpt2.trace(PROMPT):
            clean = first.output[0, -1]
        with gpt2.trace(OTHER) as corrupted:
            other = first.output[0, -1]
        difference = torch.softmax(clean - other, -1) * 3
        kept = difference.save()
        with pytest.raises(ValueNotReadyError, match="after the session"):
            kept.value
        with gpt2.trace(OTHER):
            second.output[:, -1] += difference
            logits = gpt2.lm_head.output.save()
        graphs = [block.graph() for block in session.blocks]
    assert difference.tracer is corrupted and graphs[1].nodes[-1].op == "mul"
    assert [node.args for node in graphs[1].nodes if node.op == "session.value"] == [(0, clean.node_id)]
    with gpt2.trace(PROMPT):
        clean_value = first.output[0, -1].save()
    with gpt2.trace(OTHER):
        other_value = first.output[0, -1].save()
    expected_difference = torch.softmax(clean_value.value - other_value.value, -1) * 3
    with gpt2.trace(OTHER):
        second.output[:, -1] += expected_difference
        expected = gpt2.lm_head.output.save()
    assert torch.equal(kept.value, expected_difference)
    assert torch.equal(logits.value, expected.value)


def test_only_values_later_blocks_read_are_kept(gpt2: Model):
    first, second, third = (gpt2.module(path) for path in layer_paths(gpt2))
    with gpt2.session() as session:
        with gpt2.trace(PROMPT):
            read_later = first.output[0, -1]
            not_read = second.output[0, -1]
            not_read.norm()
        with gpt2.trace(OTHER):
            third.output[:, 0] = read_later
            read_later.norm()
        blocks = [block.graph() for block in session.blocks]
    imports = [node for node in blocks[1].nodes if node.op == SESSION_VALUE]
    assert [node.args for node in imports] == [(0, read_later.node_id)]
    result = execute_session(Session(blocks), gpt2.loaded.dispatch("cpu"))
    assert [len(block.saved) for block in result.results] == [0, 0]
    assert all(not block.kept for block in result.results)
    assert result.forward_calls == 2


def test_a_trainable_in_a_session_gets_its_gradient(gpt2: Model):
    first, second, _ = (gpt2.module(path) for path in layer_paths(gpt2))
    probe = torch.linspace(-1, 1, gpt2.config.hidden_size).requires_grad_(True)
    with gpt2.session():
        with gpt2.trace(PROMPT):
            direction = first.output[0, -1]
        with gpt2.trace(OTHER) as tracer:
            weights = tracer.trainable(probe)
            second.output[:, -1] += direction * weights
            loss = gpt2.lm_head.output[0, -1].log_softmax(-1)[3]
            loss.backward()
    expected_probe = probe.detach().clone().requires_grad_(True)
    with gpt2.trace(PROMPT):
        saved = first.output[0, -1].save()
    with gpt2.trace(OTHER) as tracer:
        weights = tracer.trainable(expected_probe)
        second.output[:, -1] += saved.value * weights
        loss = gpt2.lm_head.output[0, -1].log_softmax(-1)[3]
        loss.backward()
    assert probe.grad is not None and torch.count_nonzero(probe.grad) > 0
    assert torch.equal(probe.grad, expected_probe.grad)


def test_a_value_never_computed_in_its_block_fails_at_the_line_that_reads_it(gpt2: Model):
    first = gpt2.module(layer_paths(gpt2)[0])
    with pytest.raises(ExecutionError, match="block 1 of the session never computed") as error:
        with gpt2.session():
            with gpt2.trace(PROMPT) as tracer:
                with tracer.cond(first.output.norm() < 0):
                    never = first.output[0, -1] * 2
                kept = first.output.save()
            with gpt2.trace(OTHER):
                first.output[:, -1] = never
    assert error.value.source is not None and "first.output[:, -1] = never" in error.value.source.line
    with pytest.raises(ValueNotReadyError, match="running the session failed"):
        kept.value


def test_sessions_say_what_is_wrong(gpt2: Model):
    first = gpt2.module(layer_paths(gpt2)[0])
    with gpt2.session():
        with pytest.raises(TraceError, match="blocks of a session run where the session runs"):
            gpt2.trace(PROMPT, device_map="server")
        with pytest.raises(TraceError, match="outside any other session"):
            with gpt2.session():
                pass
        with gpt2.trace(PROMPT):
            hidden = first.output[0, -1]
        with pytest.raises(
            TraceError, match="another block, where it has none: This value's block belongs to a session"
        ):
            with gpt2.edit():
                first.output[:, -1] = hidden
    with gpt2.trace(PROMPT):
        with pytest.raises(TraceError, match="outside any other session or block"):
            with gpt2.session():
                pass
    with pytest.raises(ZeroDivisionError):
        with gpt2.session():
            with gpt2.trace(PROMPT):
                saved = first.output.save()
            1 / 0
    with pytest.raises(ValueNotReadyError, match="the session raised an error"):
        saved.value
    with gpt2.session():
        pass
    with gpt2.trace(PROMPT):
        after = first.output.save()
    assert after.value.shape[0] == 1
