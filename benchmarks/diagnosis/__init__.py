"""Detection error diagnosis: TIDE error types with oracle dAPs (``tide``), Hoiem-style false-positive types
(``hoiem``), their charts (``charts``) and the combined report (``report``)."""
