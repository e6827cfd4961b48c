"""Request and response models of the API. Money is ``Decimal`` and travels as a JSON string."""
