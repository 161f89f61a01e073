-- pattern: volume_surge
-- input: candles
-- severity: warning
-- param: k decimal 3 a candle's volume must exceed k x the trailing average
-- param: trailing rows 20 how many preceding candles the average is taken over
--
-- A candle whose volume is more than k times the average volume of the `trailing` candles
-- before it (the previous rows of the market, whatever their times: gaps are not filled).
-- Strictly more; no alert until `trailing` earlier candles exist. Flink OVER windows end at
-- the current row, so the trailing sum is the sum over trailing + 1 rows minus the current.
-- Compared as volume * trailing > k * trailing sum: exact decimals, no division.
SELECT `exchange`, `symbol`,
  CAST(NULL AS STRING) AS `ingestor_id`,
  window_start_us AS `window_start_us`,
  window_end_us AS `window_end_us`,
  exchange_ts_us AS `exchange_ts_us`,
  receipt_ts_us AS `receipt_ts_us`,
  CAST(volume AS STRING) AS `observed`,
  CAST(p_k * trailing_sum / ${trailing} AS STRING) AS `threshold`,
  CAST(trailing_sum / ${trailing} AS STRING) AS `reference`,
  'volume' AS `unit`,
  CONCAT(`exchange`, ':', `symbol`, ' traded ', ${num:volume},
    ' in one candle, more than ', ${num:p_k}, ' x the average ',
    ${num:trailing_sum / ${trailing}}, ' of the previous ${trailing} candles') AS `message`
FROM (
  SELECT *,
    CAST(SUM(volume) OVER w - volume AS DECIMAL(28, 8)) AS trailing_sum,
    COUNT(*) OVER w - 1 AS trailing_n
  FROM ${candles}
  WINDOW w AS (
    PARTITION BY `exchange`, `symbol` ORDER BY event_time
    ROWS BETWEEN ${trailing} PRECEDING AND CURRENT ROW)
)
WHERE trailing_n = ${trailing} AND volume * ${trailing} > p_k * trailing_sum
