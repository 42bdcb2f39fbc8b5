# Budgets, reservations and the token ledger arrive with the message/billing work.
