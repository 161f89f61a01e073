-- pattern: dead_feed
-- input: heartbeats
-- severity: critical
-- param: factor decimal 2 a heartbeat is missed when none follows within factor x interval_ms
-- param: max_gap interval 60s cap of that deadline; detected once event time passes it
--
-- A feed (ingestor, market) whose next heartbeat does not come by its deadline: the
-- heartbeat's receipt time + min(factor x interval_ms, max_gap). A LEFT OUTER interval join
-- of the heartbeats with their own successors: a heartbeat without one is emitted, padded with
-- NULLs, when the watermark (the heartbeats of every feed) passes it + max_gap. A successor
-- exactly at the deadline counts (not dead). One alert per silence: the last heartbeat before
-- it. Event time: if every feed of the topic stops, the watermark stops too (see docs/cep.md).
SELECT a.`exchange`, a.`symbol`, a.`ingestor_id`,
  a.receipt_ts_us AS `window_start_us`,
  a.deadline_us AS `window_end_us`,
  a.deadline_us AS `exchange_ts_us`,
  a.receipt_ts_us AS `receipt_ts_us`,
  CAST(NULL AS STRING) AS `observed`,
  CAST(CAST(a.deadline_us - a.receipt_ts_us AS DECIMAL(20, 0)) / 1000000 AS STRING) AS `threshold`,
  CAST(NULL AS STRING) AS `reference`,
  's' AS `unit`,
  CONCAT(a.`exchange`, ':', a.`symbol`, ' feed ', a.`ingestor_id`,
    ' sent no heartbeat within ',
    ${num:CAST(a.deadline_us - a.receipt_ts_us AS DECIMAL(20, 0)) / 1000000},
    ' s of its last one (state ', a.`state`, ')') AS `message`
FROM (
  SELECT *,
    receipt_ts_us + LEAST(CAST(p_factor * interval_ms * 1000 AS BIGINT), ${max_gap_us})
      AS deadline_us
  FROM ${heartbeats}
) a
LEFT JOIN ${heartbeats} b
  ON a.`exchange` = b.`exchange` AND a.`symbol` = b.`symbol`
  AND a.`ingestor_id` = b.`ingestor_id`
  AND b.event_time > a.event_time AND b.event_time <= a.event_time + ${max_gap}
  AND b.receipt_ts_us <= a.deadline_us
WHERE b.receipt_ts_us IS NULL
