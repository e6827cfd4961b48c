"""Self-match prevention: ``paper_orders.state`` allows ``prevented``

Upbit's order state ``prevented`` (an order stopped by self-match prevention, ``smp_type``) is one of the exchange
order states the code knows (``ExchangeOrderState``); ``paper_orders.state`` stores those states and its CHECK
constraint (0006) now allows it too. The paper exchange does not simulate self-match prevention today, so no row
holds it yet; the column and the code's enum stay one list.

The values below are frozen copies of the enum at this revision (a migration never imports the code it migrates).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES_0006 = ("wait", "watch", "done", "cancel")
STATES = (*STATES_0006, "prevented")
CHECK = "ck_paper_orders_paper_order_state"


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _check(states: Sequence[str]) -> None:
    with op.batch_alter_table("paper_orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f(CHECK), type_="check")
        batch_op.create_check_constraint(op.f(CHECK), _in("state", states))


def upgrade() -> None:
    _check(STATES)


def downgrade() -> None:
    """A ``prevented`` paper order becomes ``cancel`` (what it is to 0012: final, the rest cancelled)."""
    op.execute(sa.text("UPDATE paper_orders SET state = 'cancel' WHERE state = 'prevented'"))
    _check(STATES_0006)
