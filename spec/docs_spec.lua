-- spec/docs_spec.lua
--
-- Owns: the cross references of the documentation: every relative Markdown link of a tracked
-- .md file names a file that exists (and a heading of it, for #anchor), and every named section
-- ('docs/x.md, "Section"' or 'docs/x.md ("Section")') in any tracked text file is a heading of
-- that file. Also: the README stays a newcomer's page (at most about 300 lines).

package.path = "./?.lua;" .. package.path

local launch = require "emulator.launch"

local function tracked()
  local out = assert(launch.capture("git ls-files 2>/dev/null"))
  local files = {}
  for f in out:gmatch("[^\n]+") do files[#files + 1] = f end
  assert(#files > 0, "git ls-files listed nothing: run from a checkout")
  return files
end

local function read(path) return launch.read_file(path) end

local function exists(path)
  return launch.run("test -e " .. launch.sh_quote(path))
end

-- The headings of a Markdown text outside code blocks, as written and as GitHub's anchors.
local headings_cache = {}
local function headings(path)
  if headings_cache[path] then return headings_cache[path] end
  local names, anchors, fenced = {}, {}, false
  for line in ((read(path) or "") .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") then fenced = not fenced
    elseif not fenced then
      local title = line:match("^#+%s+(.-)%s*$")
      if title then
        names[title] = true
        local slug = title:lower():gsub("[^%w%s_-]", ""):gsub("%s", "-")
        anchors[slug] = true
      end
    end
  end
  headings_cache[path] = { names = names, anchors = anchors }
  return headings_cache[path]
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

-- a/b/../c -> a/c
local function normalize(path)
  local parts = {}
  for p in path:gmatch("[^/]+") do
    if p == ".." and #parts > 0 and parts[#parts] ~= ".." then parts[#parts] = nil
    elseif p ~= "." then parts[#parts + 1] = p end
  end
  return table.concat(parts, "/")
end

-- Text outside fenced code blocks and inline code spans.
local function prose(text)
  local out, fenced = {}, false
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") then fenced = not fenced
    elseif not fenced then out[#out + 1] = (line:gsub("`[^`]*`", "")) end
  end
  return table.concat(out, "\n")
end

describe("the documentation", function()
  local files = tracked()

  it("has no broken relative link", function()
    local broken, checked = {}, 0
    for _, f in ipairs(files) do
      if f:match("%.md$") then
        for target in prose(read(f) or ""):gmatch("%]%(([^)%s]+)%)") do
          if not target:match("^%a[%w+.-]*:") then        -- not http:, mailto:, ...
            checked = checked + 1
            local path, anchor = target:match("^([^#]*)#?(.*)$")
            local full = path == "" and f or normalize(dirname(f) .. "/" .. path)
            if not exists(full) then
              broken[#broken + 1] = f .. ": " .. target .. " (no " .. full .. ")"
            elseif anchor ~= "" and not headings(full).anchors[anchor] then
              broken[#broken + 1] = f .. ": " .. target .. " (no heading #" .. anchor .. " in " .. full .. ")"
            end
          end
        end
      end
    end
    assert.is_true(checked > 20, "only " .. checked .. " links found")
    assert.are.same({}, broken)
  end)

  it("names only sections that exist", function()
    local broken, checked = {}, 0
    for _, f in ipairs(files) do
      local text = not f:match("^fuzz/") and read(f)
      if text and not text:find("%z") then
        -- 'x.md, "Section"' and 'x.md ("Section")'
        for _, pattern in ipairs({ '([%w_./-]+%.md),%s*"([^"\n]+)"', '([%w_./-]+%.md)%s*%("([^"\n]+)"' }) do
          for doc, section in text:gmatch(pattern) do
            if exists(doc) then
              checked = checked + 1
              if not headings(doc).names[section] then
                broken[#broken + 1] = f .. ': ' .. doc .. ' has no section "' .. section .. '"'
              end
            end
          end
        end
      end
    end
    assert.is_true(checked >= 4, "only " .. checked .. " section references found")
    assert.are.same({}, broken)
  end)

  it("keeps the README a newcomer's page that starts with the two commands", function()
    local readme = read("README.md")
    local lines = select(2, readme:gsub("\n", ""))
    assert.is_true(lines <= 320, "README.md has " .. lines .. " lines")
    local two = readme:match("\n## Two commands\n(.-)\n## ")
    assert.truthy(two and two:find("make demo", 1, true) and two:find("make test", 1, true))
    assert.truthy(readme:find("](docs/README.md)", 1, true))
  end)
end)
