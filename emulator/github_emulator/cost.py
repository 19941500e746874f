"""Static analysis of a GraphQL query the way GitHub does it before executing anything:
rate-limit cost, node count, pagination argument errors, and fields that need extra scopes.

Cost (GitHub's documented formula): every connection that selects ``nodes`` or ``edges`` needs
as many requests as the product of the first/last of the connections enclosing it (1 at the top
level); the sum divided by 100, rounded half up, minimum 1. A connection that selects only
totalCount/pageInfo adds nothing (measured on GitHub). The node count sums, for those same
connections, first/last times the enclosing product; GitHub refuses more than 500,000.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    get_named_type,
    parse,
    value_from_ast_untyped,
)

from .schema import load_schema

MAX_PAGE = 100
MAX_NODES = 500_000
ITEM_FIELDS = frozenset({"nodes", "edges"})


@dataclass
class ConnectionUse:
    path: list[str]  # response keys from the root, the connection's own key last
    field: str
    first: int | None
    last: int | None
    selects_items: bool
    multiplier: int  # product of first/last of the enclosing connections


@dataclass
class Analysis:
    cost: int = 1
    node_count: int = 0
    connections: list[ConnectionUse] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # GitHub-style errors; non-empty = refuse
    user_email: bool = False  # selects User.email (needs user:email or read:user)
    dry_run: bool = False  # rateLimit(dryRun: true) present


def _operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        return next((o for o in ops if o.name and o.name.value == operation_name), None)
    return ops[0] if len(ops) == 1 else None


def analyze(
    document: DocumentNode | str,
    schema: GraphQLSchema,
    variables: dict | None = None,
    operation_name: str | None = None,
) -> Analysis:
    if isinstance(document, str):
        document = parse(document)
    result = Analysis()
    op = _operation(document, operation_name)
    if op is None:
        return result
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    values = dict(variables or {})
    for var in op.variable_definitions or ():
        name = var.variable.name.value
        if name not in values and var.default_value is not None:
            values[name] = value_from_ast_untyped(var.default_value)

    def arg(node: FieldNode, name: str) -> object:
        for a in node.arguments or ():
            if a.name.value == name:
                v = value_from_ast_untyped(a.value, values)
                return None if v is Undefined else v
        return None

    def selects_items(sel: SelectionSetNode, seen: frozenset[str]) -> bool:
        for s in sel.selections:
            if isinstance(s, FieldNode) and s.name.value in ITEM_FIELDS:
                return True
            if isinstance(s, InlineFragmentNode) and selects_items(s.selection_set, seen):
                return True
            if isinstance(s, FragmentSpreadNode) and s.name.value not in seen:
                frag = fragments.get(s.name.value)
                if frag and selects_items(frag.selection_set, seen | {s.name.value}):
                    return True
        return False

    def walk(parent, sel: SelectionSetNode, path: list[str], mult: int, seen: frozenset[str]) -> None:
        for s in sel.selections:
            if isinstance(s, InlineFragmentNode):
                target = schema.get_type(s.type_condition.name.value) if s.type_condition else parent
                walk(target or parent, s.selection_set, path, mult, seen)
                continue
            if isinstance(s, FragmentSpreadNode):
                frag = fragments.get(s.name.value)
                if frag is not None and s.name.value not in seen:
                    target = schema.get_type(frag.type_condition.name.value) or parent
                    walk(target, frag.selection_set, path, mult, seen | {s.name.value})
                continue
            name = s.name.value
            fdef = getattr(parent, "fields", {}).get(name) if parent is not None else None
            if fdef is None:
                continue  # __typename, or a field validation reports anyway
            key = s.alias.value if s.alias else name
            ftype = get_named_type(fdef.type)
            if name == "email" and parent.name == "User":
                result.user_email = True
            if name == "rateLimit" and arg(s, "dryRun") is True:
                result.dry_run = True
            if s.selection_set is None:
                continue
            child_mult = mult
            if ftype.name.endswith("Connection"):
                first, last = arg(s, "first"), arg(s, "last")
                items = selects_items(s.selection_set, seen)
                use = ConnectionUse([*path, key], name, first, last, items, mult)
                result.connections.append(use)
                _check_pagination(use, result.errors)
                n = first if first is not None else last
                if items and isinstance(n, int) and n > 0:
                    child_mult = mult * n
            walk(ftype, s.selection_set, [*path, key], child_mult, seen)

    walk(schema.get_root_type(op.operation), op.selection_set, [], 1, frozenset())

    requests = 0
    for use in result.connections:
        if use.selects_items:
            requests += use.multiplier
            n = use.first if use.first is not None else use.last
            result.node_count += use.multiplier * (n if isinstance(n, int) and n > 0 else 0)
    result.cost = max(1, (requests + 50) // 100)  # integer round half up
    if result.node_count > MAX_NODES and not result.errors:
        result.errors.append(
            {
                "type": "MAX_NODE_LIMIT_EXCEEDED",
                "message": f"This query requests up to {result.node_count:,} possible nodes which exceeds "
                f"the maximum limit of {MAX_NODES:,}.",
            }
        )
    return result


def _check_pagination(use: ConnectionUse, errors: list[dict]) -> None:
    where = {"path": use.path}
    if use.first is not None and use.last is not None:
        errors.append(
            {
                "type": "INVALID_PAGINATION",
                **where,
                "message": f"Passing both `first` and `last` to paginate the `{use.field}` connection "
                "is not supported.",
            }
        )
        return
    for arg_name, n in (("first", use.first), ("last", use.last)):
        if n is None:
            continue
        if not isinstance(n, int) or n < 1:
            errors.append(
                {
                    "type": "INVALID_PAGINATION",
                    **where,
                    "message": f"`{arg_name}` on the `{use.field}` connection must be between 1 and "
                    f"{MAX_PAGE}, got {n}.",
                }
            )
        elif n > MAX_PAGE:
            errors.append(
                {
                    "type": "EXCESSIVE_PAGINATION",
                    **where,
                    "message": f"Requesting {n} records on the `{use.field}` connection exceeds the "
                    f"`{arg_name}` limit of {MAX_PAGE} records.",
                }
            )
    if use.selects_items and use.first is None and use.last is None:
        errors.append(
            {
                "type": "MISSING_PAGINATION_BOUNDARIES",
                **where,
                "message": f"You must provide a `first` or `last` value to properly paginate the "
                f"`{use.field}` connection.",
            }
        )


def query_cost(
    document: DocumentNode | str,
    variables: dict | None = None,
    *,
    schema: GraphQLSchema | None = None,
    operation_name: str | None = None,
) -> tuple[int, int]:
    """(cost, node_count) of a query against the emulator's schema (or another one)."""
    if schema is None:
        schema = load_schema()
    a = analyze(document, schema, variables, operation_name)
    return a.cost, a.node_count
