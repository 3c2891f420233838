-- stock_tcc.lua (after stock_lib.lua, which gives the keys, arguments and reply): a TCC branch's
-- try, confirm and cancel on one activity product's SKUs, atomically, with the barrier of a dtm
-- participant kept in the branch's marker on the product.
--
-- ARGV[1]   try | confirm | cancel
-- ARGV[2]   "t:<gid>/<branch id>"
-- ARGV[6]   confirm, cancel: the marker as the caller read it (the items are its items); if it has
--           changed since, nothing is done and RETRY is answered. try: ""
--
-- Markers: "t#<items>" tried (reserved), "f#<items>" confirmed, "c#<items>" cancelled. A confirm or
-- cancel of a branch never tried records "f#" or "c#" with no items, so its late try is refused.
-- Codes: OUT_OF_STOCK, NOT_FOR_SALE, NOT_FOUND (try); REFUSED (a try after its cancel or its null
-- confirm, a confirm after its cancel); NOT_TRIED (a confirm of a branch never tried: recorded,
-- nothing sold); CONFIRMED (a cancel after its confirm: nothing undone); RETRY. What dtm is told is
-- the participant's choice (engine/stock/tcc.go): confirm and cancel end in success.

local ops = {}

function ops.try()
  if state == 't' or (state == 'f' and marker ~= 'f#') then
    return {0, 1}
  elseif state then
    return {CODE.REFUSED, 0} -- ended before its try arrived: the late try must not reserve
  end
  local failed = check()
  if failed then
    return {CODE[failed], 0} -- not recorded: dtm cancels the branch, which records that
  end
  touched = {}
  change('try', function(c, qty)
    c.a, c.r = c.a - qty, c.r + qty
  end)
  record('t#' .. encode(args()))
  return {0, 0}
end

function ops.confirm()
  if (marker or '') ~= ARGV[6] then
    return {CODE.RETRY, 0}
  elseif state == 'f' then
    return {0, 1}
  elseif state == 'c' then
    return {CODE.REFUSED, 1}
  elseif state ~= 't' then
    record('f#') -- confirmed without a try (its reservation was lost): nothing to sell
    return {CODE.NOT_TRIED, 0}
  end
  change('confirm', function(c, qty)
    c.r, c.s = c.r - qty, c.s + qty
  end)
  record('f#' .. encode(args()))
  return {0, 0}
end

function ops.cancel()
  if (marker or '') ~= ARGV[6] then
    return {CODE.RETRY, 0}
  elseif state == 'c' then
    return {0, 1}
  elseif state == 'f' then
    return {CODE.CONFIRMED, 1}
  end
  if state == 't' then
    change('cancel', function(c, qty)
      give_back(c, qty, 'r')
    end)
  end
  -- A cancel before its try (a null compensation) is recorded too: the late try is refused.
  record('c#' .. encode(args()))
  return {0, 0}
end

return dispatch(ops, 'stock_tcc.lua')
