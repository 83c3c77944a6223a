"""The checkerboard data set shared by the model tests: customers of even and odd parity who each hold the offers of
their parity, one of which is held out; every model must rank that held-out offer first."""

from __future__ import annotations

import polars as pl

from recommender.columns import Columns

N_CUSTOMERS = 40
N_OFFERS = 12


def _customer(i: int) -> str:
    return f"c{i:03d}"


def _offer(j: int) -> str:
    return f"o{j:02d}"


def checkerboard() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(train, held_out, customers, offers). Held-out offer of customer i: the (i // 2 % 6)-th of its parity."""
    train, held_out = [], []
    for i in range(N_CUSTOMERS):
        own = [j for j in range(N_OFFERS) if j % 2 == i % 2]
        hidden = own[(i // 2) % len(own)]
        held_out.append((_customer(i), _offer(hidden)))
        train += [(_customer(i), _offer(j)) for j in own if j != hidden]
    train_frame = pl.DataFrame(train, schema=[Columns.Customer, Columns.Product], orient="row").with_columns(
        pl.lit(1.0).alias(Columns.Weight)
    )
    held_frame = pl.DataFrame(held_out, schema=[Columns.Customer, Columns.Offer], orient="row")
    customers = pl.DataFrame(
        {
            Columns.Customer: [_customer(i) for i in range(N_CUSTOMERS)],
            Columns.Segment: ["even" if i % 2 == 0 else "odd" for i in range(N_CUSTOMERS)],
            "parity": ["even" if i % 2 == 0 else "odd" for i in range(N_CUSTOMERS)],
        }
    )
    offers = pl.DataFrame(
        {
            Columns.Product: [_offer(j) for j in range(N_OFFERS)],
            Columns.Family: ["even_family" if j % 2 == 0 else "odd_family" for j in range(N_OFFERS)],
        }
    )
    return train_frame, held_frame, customers, offers
