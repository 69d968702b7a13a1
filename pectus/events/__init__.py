"""Events: the aggregator's append-only, hash-chained log (:mod:`pectus.events.store`) and the
facts written to it."""
