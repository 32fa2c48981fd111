"""The boolean algebra the prefilter is built with simplifies before the database sees it."""

from __future__ import annotations

from sqlalchemy import literal_column

from journeyman.audiences.formula import SUBQUERY_COST, All, Atom, conj, disj, neg, to_sql


def atom(name: str, cost: int = 1) -> Atom:
    return Atom((name,), literal_column(name) == 1, cost)


def test_a_contradiction_is_false_and_a_tautology_true() -> None:
    x = atom("x")
    assert conj(x, atom("y"), neg(x)) is False
    assert disj(x, neg(x)) is True
    assert neg(neg(x)) == x


def test_constants_drop_out() -> None:
    x = atom("x")
    assert conj(True, x) == x
    assert disj(False, x) == x
    assert conj(False, x) is False
    assert disj(True, x) is True


def test_a_conjunct_common_to_every_branch_is_factored_out() -> None:
    """(e and a) or (e and b) is e and (a or b): the planner can make a semi-join of a
    top-level EXISTS, never of one inside an OR."""
    e, a, b = atom("e", SUBQUERY_COST), atom("a"), atom("b")
    factored = disj(conj(e, a), conj(e, b))
    assert isinstance(factored, All)
    assert e in factored.of
    assert disj(e, conj(e, a)) == e  # absorption


def test_cheap_tests_come_before_subqueries() -> None:
    sql = to_sql(conj(atom("slow", SUBQUERY_COST), atom("fast")))
    assert str(sql.compile(compile_kwargs={"literal_binds": True})) == "fast = 1 AND slow = 1"
