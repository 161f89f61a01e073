-- pattern: price_spike
-- input: candles
-- severity: warning
-- param: pct decimal 5 move limit, percent of the reference close
-- param: atr_k decimal 0 move limit in multiples of the reference candle's ATR(14); 0 = off
-- param: window interval 5m the trigger candle comes within this of the reference (WITHIN)
--
-- A close that moved more than the limit away from an earlier close of the same market within
-- the window. The limit is pct % of the reference close, or atr_k x ATR(14) of the reference
-- candle when that is smaller (atr_k > 0 and 14 candles seen). Strictly more: a move exactly
-- at the limit does not fire. Of the candles the move exceeds the limit from, the earliest in
-- the window is the reference (Flink CEP emits the earliest-started match first); matching
-- resumes after the trigger candle (AFTER MATCH SKIP PAST LAST ROW). The alert's window is
-- [trigger end - window, trigger end).
SELECT `exchange`, `symbol`,
  CAST(NULL AS STRING) AS `ingestor_id`,
  end_us - ${window_us} AS `window_start_us`,
  end_us AS `window_end_us`,
  ts_us AS `exchange_ts_us`,
  rc_us AS `receipt_ts_us`,
  CAST(last_close AS STRING) AS `observed`,
  CAST(move_limit AS STRING) AS `threshold`,
  CAST(ref_close AS STRING) AS `reference`,
  'price' AS `unit`,
  CONCAT(`exchange`, ':', `symbol`, ' moved from ', ${num:ref_close}, ' to ',
    ${num:last_close}, ' within ${window_text}, more than the limit of ',
    ${num:move_limit}) AS `message`
FROM (
  SELECT *,
    CASE WHEN p_atr_k > 0 AND atr IS NOT NULL
      THEN LEAST(p_pct * `close` * 0.01, p_atr_k * atr)
      ELSE p_pct * `close` * 0.01
    END AS move_limit
  FROM ${candles}
)
MATCH_RECOGNIZE (
  PARTITION BY `exchange`, `symbol`
  ORDER BY event_time
  MEASURES
    A.`close` AS ref_close,
    A.move_limit AS move_limit,
    C.`close` AS last_close,
    C.window_end_us AS end_us,
    C.exchange_ts_us AS ts_us,
    C.receipt_ts_us AS rc_us
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (A B*? C) WITHIN ${window}
  DEFINE C AS ABS(C.`close` - A.`close`) > A.move_limit
)
