"""The one walker of nested values, on each kind of container it enters, and on what it leaves alone."""

from __future__ import annotations

from collections import OrderedDict, defaultdict, namedtuple

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast

from ndif_jupyter.ir.graph import Ref, iter_refs
from ndif_jupyter.ir.nested import any_leaf, iter_containers, leaf_shapes, leaves, map_leaves, zip_map_leaves
from ndif_jupyter.tracing.proxy import proxies_in, resolve_saved

Pair = namedtuple("Pair", "first second")


def doubled(value):
    return map_leaves(lambda leaf: leaf * 2 if isinstance(leaf, (int, torch.Tensor)) else leaf, value)


def test_tuples_and_lists_keep_their_kind():
    assert doubled((1, [2, 3])) == (2, [4, 6])
    assert type(doubled((1,))) is tuple and type(doubled([1])) is list


def test_named_tuples_are_rebuilt_as_named_tuples():
    result = doubled(Pair(1, 2))
    assert isinstance(result, Pair) and result.first == 2 and result.second == 4


def test_dicts_and_dict_subclasses_keep_their_type_and_extras():
    assert doubled({"a": 1}) == {"a": 2}
    ordered = doubled(OrderedDict(a=1, b=2))
    assert type(ordered) is OrderedDict and list(ordered.items()) == [("a", 2), ("b", 4)]
    counts = doubled(defaultdict(int, {1: 5}))
    assert type(counts) is defaultdict and counts[1] == 10 and counts["missing"] == 0


def test_model_outputs_keep_their_fields_and_leave_the_original_alone():
    hidden = torch.ones(2)
    output = BaseModelOutputWithPast(last_hidden_state=hidden)
    result = doubled(output)
    assert isinstance(result, BaseModelOutputWithPast)
    assert torch.equal(result.last_hidden_state, torch.full((2,), 2.0)) and torch.equal(
        result[0], result.last_hidden_state
    )
    assert output.last_hidden_state is hidden


def test_slices_are_entered():
    assert doubled(slice(1, 3, None)) == slice(2, 6, None)
    assert list(iter_refs((slice(Ref(0), Ref(1)), {"k": [Ref(2)]}))) == [Ref(0), Ref(1), Ref(2)]


def test_strings_tensors_and_other_objects_are_leaves():
    tensor = torch.zeros(2, 3)
    assert leaves(["ab", tensor, None]) == ["ab", tensor, None]
    assert leaf_shapes((tensor, "x")) == [[2, 3], None]


def test_order_is_the_same_for_leaves_and_map_leaves():
    value = {"b": (1, [2, slice(3, 4)]), "a": Pair(5, 6)}
    seen = []
    map_leaves(seen.append, value)
    assert seen == leaves(value) == [1, 2, 3, 4, None, 5, 6]


def test_zip_map_leaves_walks_two_structures_and_names_a_difference():
    assert zip_map_leaves(lambda a, b: a + b, Pair(1, [2]), (10, [20])) == Pair(11, [22])
    try:
        zip_map_leaves(lambda a, b: a, (1, 2), (1,))
    except ValueError as error:
        assert "2 items" in str(error)
    else:
        raise AssertionError("a structure of another length was accepted")


def test_any_leaf_and_containers():
    assert any_leaf(lambda leaf: leaf == 3, [1, (2, {"x": 3})])
    assert not any_leaf(lambda leaf: leaf == 4, [1, (2, {"x": 3})])
    assert [type(c) for c in iter_containers([1, (2, {"x": slice(1)})])] == [list, tuple, dict, slice]


def test_proxies_are_found_and_resolved_in_every_container(gpt2):
    with gpt2.trace("Hello") as tracer:
        hidden = gpt2.transformer.h[0].output.save()
        logits = gpt2.lm_head.output.save()
    nested = {"pair": Pair(hidden, 1), "ordered": OrderedDict(x=[logits]), "plain": (2, "text")}
    assert list(proxies_in(nested)) == [hidden, logits]
    resolved = resolve_saved(nested, tracer)
    assert resolved["pair"].first is hidden.value and resolved["ordered"]["x"][0] is logits.value
    assert resolve_saved(nested["plain"], tracer) is nested["plain"], "a value without proxies is returned as it is"
