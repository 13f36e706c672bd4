"""The benchmark tables: results.json's schema, a run's table, a sweep's summary, and the paper's numbers beside
them. For the people who compare methods, apart from the labelling team's hand-back (elfs/handback/)."""
