from django.db import models


class Side(models.TextChoices):
    BUY = "buy"
    SELL = "sell"


class OrderType(models.TextChoices):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(models.TextChoices):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class TradeStatus(models.TextChoices):
    PENDING_APPROVAL = "pending_approval"
    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"


OPEN_STATUSES = (TradeStatus.PENDING_APPROVAL, TradeStatus.OPEN)
FINAL_STATUSES = (
    TradeStatus.FILLED,
    TradeStatus.CANCELLED,
    TradeStatus.REJECTED,
    TradeStatus.EXPIRED,
    TradeStatus.FAILED,
)
