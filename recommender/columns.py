"""Column names shared by every table passed between modules (one contract for the data's shape)."""


class Columns:
    """Canonical column names. Inputs use ``product_id``; ranked outputs call the same id ``offer_id``."""

    Customer = "customer_id"
    Product = "product_id"
    Offer = "offer_id"
    Family = "family"
    EventType = "event_type"
    EventTime = "event_time"
    Weight = "weight"
    Score = "score"
    Rank = "rank"
    Segment = "segment"
    Arm = "arm"
    Channel = "channel"
