"""The read side: one module per resource the API, Telegram and the reports read. Queries run on a Core
connection (or a session) and return rows or small dataclasses; no ORM identity map to fill for rows that are
only serialised."""
