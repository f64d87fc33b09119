-- examples/love/conf.lua — LÖVE 11 configuration.
--
-- Headless (no window, no graphics or audio; needs no display) when KVS_HEADLESS=1, or when
-- there is no display to open a window on; otherwise a small window that draws the progress.
local headless = os.getenv("KVS_HEADLESS") == "1"
  or ((os.getenv("DISPLAY") or "") == "" and (os.getenv("WAYLAND_DISPLAY") or "") == "")

function love.conf(t)
  t.identity = "apify-kvs-love"   -- save directory: ~/.local/share/love/apify-kvs-love/
  t.version = "11.4"
  t.accelerometerjoystick = false
  t.modules.audio = false
  t.modules.sound = false
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
  t.modules.touch = false
  if headless then
    t.window = false
    t.modules.window = false
    t.modules.graphics = false
    t.modules.font = false
    t.modules.image = false
    t.modules.keyboard = false
    t.modules.mouse = false
  else
    t.window.title = "apify.kvs: listing keys"
    t.window.width, t.window.height = 640, 200
    t.window.vsync = 1
  end
end
