-- pattern: stale_feed
-- input: heartbeats
-- severity: warning
-- param: after duration 60s longest time without a received trade while the feed is alive
--
-- A feed (one ingestor's feed of one market) whose heartbeat says it is alive (state live or
-- polling) while its last trade was received more than `after` before the heartbeat. One
-- alert per stale episode: the pattern is a fresh heartbeat directly followed by a stale one
-- (so a feed stale from its very first heartbeat is not reported). Strictly more: exactly
-- `after` is not stale. A heartbeat without a last trade (none seen yet) is never stale.
SELECT `exchange`, `symbol`, `ingestor_id`,
  last_us AS `window_start_us`,
  hb_us AS `window_end_us`,
  hb_us AS `exchange_ts_us`,
  hb_us AS `receipt_ts_us`,
  CAST(CAST(hb_us - last_us AS DECIMAL(20, 0)) / 1000000 AS STRING) AS `observed`,
  CAST(CAST(limit_us AS DECIMAL(20, 0)) / 1000000 AS STRING) AS `threshold`,
  CAST(NULL AS STRING) AS `reference`,
  's' AS `unit`,
  CONCAT(`exchange`, ':', `symbol`, ' feed ', `ingestor_id`, ' is ', feed_state,
    ' but received no trade for ',
    ${num:CAST(hb_us - last_us AS DECIMAL(20, 0)) / 1000000}, ' s') AS `message`
FROM (
  SELECT *,
    `state` IN ('live', 'polling') AND last_receipt_ts_us IS NOT NULL
      AND receipt_ts_us - last_receipt_ts_us > p_after AS stale
  FROM ${heartbeats}
)
MATCH_RECOGNIZE (
  PARTITION BY `exchange`, `symbol`, `ingestor_id`
  ORDER BY event_time
  MEASURES
    S.receipt_ts_us AS hb_us,
    S.last_receipt_ts_us AS last_us,
    S.p_after AS limit_us,
    S.`state` AS feed_state
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (F S)
  DEFINE
    F AS NOT F.stale,
    S AS S.stale
)
