-- report.lua — turns bench/run.sh's raw measurements into a Markdown table.
-- Usage: lua5.4 report.lua RAW.tsv NAMES.txt N PAGES
-- RAW.tsv rows: round, peer index (0-based), wall s, peak RSS KB,
-- inner seconds or "-", requests, connections, gzipped replies.
-- RATIOS (environment, optional): "A/B;C/D" — a second table with, per pair of
-- rows, wall(A) / wall(B) per round (CPU seconds when both rows report them,
-- as the job rows do): the median and every round's ratio.
local raw_path, names_path, N, PAGES = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4])

local names = {}
for line in io.lines(names_path) do names[#names + 1] = line end

local runs = {}          -- runs[peer][round] = { wall, rss, inner, reqs, conns, gz }
for line in io.lines(raw_path) do
  local r, i, wall, rss, inner, reqs, conns, gz =
    line:match("^(%d+)\t(%d+)\t([%d.]+)\t(%d+)\t(%S+)\t(%d+)\t(%d+)\t(%d+)$")
  assert(r, "bad raw line: " .. line)
  local p = tonumber(i) + 1
  runs[p] = runs[p] or {}
  runs[p][tonumber(r)] = {
    wall = tonumber(wall), rss = tonumber(rss), inner = tonumber(inner),
    reqs = tonumber(reqs), conns = tonumber(conns), gz = tonumber(gz),
  }
end

local function median(t)
  local s = {}
  for _, v in ipairs(t) do s[#s + 1] = v end
  if #s == 0 then return nil end
  table.sort(s)
  local m = #s // 2
  if #s % 2 == 1 then return s[m + 1] end
  return (s[m] + s[m + 1]) / 2
end

local function field(p, key)
  local t = {}
  for _, run in pairs(runs[p] or {}) do
    if run[key] then t[#t + 1] = run[key] end
  end
  return t
end

local function rounds(p)
  local t = {}
  for r in pairs(runs[p] or {}) do t[#t + 1] = r end
  table.sort(t)
  return t
end

local function si(x)
  if x >= 1e6 then return string.format("%.2f M", x / 1e6) end
  if x >= 1e3 then return string.format("%.1f k", x / 1e3) end
  return string.format("%.0f", x)
end

local ref = 1
local ref_wall = median(field(ref, "wall"))

print(string.format("| peer | median wall s | keys/s | median peak RSS MB | wall / %s | median of per-round ratios | gzip | connections / requests |",
  names[ref]))
print("|---|--:|--:|--:|--:|--:|:-:|--:|")
local notes = {}
for p, name in ipairs(names) do
  local wall = median(field(p, "wall"))
  local rss = median(field(p, "rss")) / 1024
  local ratios = {}
  for _, r in ipairs(rounds(p)) do
    local a, b = runs[p][r], runs[ref] and runs[ref][r]
    if a and b and b.wall > 0 then ratios[#ratios + 1] = a.wall / b.wall end
  end
  local rr = median(ratios)
  local first = runs[p][rounds(p)[1]]
  local gzip, conns
  if first.reqs == 0 then
    gzip, conns = "—", "no HTTP"
  else
    gzip = first.gz == first.reqs and "yes" or (first.gz == 0 and "no" or first.gz .. "/" .. first.reqs)
    conns = string.format("%d / %d", first.conns, first.reqs)
  end
  print(string.format("| %s | %.3f | %s | %.1f | %s | %s | %s | %s |",
    name, wall, wall > 0 and si(N / wall) or "∞", rss,
    ref_wall and ref_wall > 0 and string.format("%.2f", wall / ref_wall) or "—",
    rr and string.format("%.2f", rr) or "—", gzip, conns))
  local inner = median(field(p, "inner"))
  if inner and name:match("job") then
    notes[#notes + 1] = string.format(
      "%s: a median %.3f s of CPU (os.clock, the whole process) = **%.0f ns of CPU a key**.",
      name, inner, inner / N * 1e9)
  elseif inner and name:match("heap") then
    notes[#notes + 1] = string.format(
      "%s: the listing loop alone took a median %.3f s of CPU = **%.0f ns a key**.",
      name, inner, inner / N * 1e9)
  elseif inner then
    notes[#notes + 1] = string.format(
      "%s: cjson.decode alone took a median %.3f s of CPU = **%s keys/s** (the rest of its wall time is reading the %d cached page files and starting up).",
      name, inner, inner > 0 and si(N / inner) or "∞", PAGES)
  end
  if name:match("^floor%-fetch") then
    notes[#notes + 1] = name .. ": discards the body; it prints the sum of the pages' \"count\" fields and no size sum (checked on count only)."
  end
end
print()
print("Wall and RSS are medians over the rounds (/usr/bin/time); keys/s = N / median wall; the ratios compare with the first row, per round then the median of those. \"gzip\" and \"connections / requests\" are what nginx saw in round 1.")
for _, n in ipairs(notes) do print("- " .. n) end

local pairs_wanted = os.getenv("RATIOS") or ""
if pairs_wanted ~= "" then
  local index = {}
  for p, name in ipairs(names) do index[name] = p end
  print()
  print("| A / B | measured | median of per-round ratios | per round |")
  print("|---|---|--:|---|")
  for pair in pairs_wanted:gmatch("[^;]+") do
    local a_name, b_name = pair:match("^%s*(.-)%s*/%s*(.-)%s*$")
    local a, b = index[a_name], index[b_name]
    if a and b then
      local key = (median(field(a, "inner")) and median(field(b, "inner"))) and "inner" or "wall"
      local ratios, shown = {}, {}
      for _, r in ipairs(rounds(a)) do
        local x, y = runs[a][r], runs[b][r]
        if x and y and x[key] and y[key] and y[key] > 0 then
          ratios[#ratios + 1] = x[key] / y[key]
          shown[#shown + 1] = string.format("%.2f", x[key] / y[key])
        end
      end
      local m = median(ratios)
      print(string.format("| %s / %s | %s | %s | %s |", a_name, b_name,
        key == "inner" and "CPU s" or "wall s", m and string.format("**%.2f**", m) or "—",
        table.concat(shown, ", ")))
    end
  end
end
