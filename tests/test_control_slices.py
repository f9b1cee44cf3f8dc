"""
Slices and their generations: one global counter, a new generation only for
a slice whose content changed, long polls woken by it and cancellable.
"""

from twisted.internet.defer import CancelledError

from blockmover.control.slices import Slices
from blockmover.model import NodeDesired


def desired(node, listed_at=0.0, cluster="c"):
    return NodeDesired(node=node, backend_id=node, cluster_name=cluster,
                       generation=0, listed_at=listed_at)


def test_only_changed_slices_take_a_new_generation():
    slices = Slices()
    slices.update({"a": desired("a"), "b": desired("b")})
    assert (slices.get("a").generation, slices.get("b").generation) == (1, 1)
    changed = slices.update({"a": desired("a", listed_at=9.0),
                             "b": desired("b", cluster="other")})
    assert changed == {"b"}
    assert (slices.get("a").generation, slices.get("b").generation) == (1, 2)
    assert slices.get("a").listed_at == 9.0
    assert slices.update({"a": desired("a"),
                          "b": desired("b", cluster="other")}) == set()
    assert slices.counter == 2


def test_a_new_configuration_names_the_generation():
    slices = Slices(counter=4)
    slices.update({"a": desired("a")}, generation=5)
    slices.update({"a": desired("a")}, generation=6)
    assert slices.counter == 6 and slices.get("a").generation == 5


def test_wait_answers_at_once_on_change_or_on_removal():
    slices = Slices()
    slices.update({"a": desired("a"), "b": desired("b")})
    now = slices.wait("a", 0)
    assert now.called
    assert slices.wait("a", None).called
    later = slices.wait("a", 1)
    gone = slices.wait("b", 1)
    assert not later.called and slices.waiting() == 2
    slices.update({"a": desired("a", cluster="x")})
    assert later.result.generation == 2
    assert gone.called and gone.result is None
    assert slices.waiting() == 0


def test_cancelled_wait_leaves_nothing_behind():
    slices = Slices()
    d = slices.wait("a", None)
    errors = []
    d.addErrback(lambda f: errors.append(f.check(CancelledError)))
    d.cancel()
    assert errors == [CancelledError] and slices.waiting() == 0
    slices.update({"a": desired("a")})
    assert slices.waiting() == 0
