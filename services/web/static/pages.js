// Signed-in pages: one-tap copy (Clipboard API, with a fallback for browsers and
// WebViews without it) and the live activity feed (Server-Sent Events).
(function () {
  "use strict";

  function textOf(el) {
    return el.value !== undefined && el.tagName !== "DIV" ? el.value : el.textContent;
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    area.setSelectionRange(0, text.length);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; }, function () { return fallbackCopy(text); });
    }
    return Promise.resolve(fallbackCopy(text));
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest ? ev.target.closest("[data-copy]") : null;
    if (!button) { return; }
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) { return; }
    copy(textOf(source)).then(function (ok) {
      var label = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", label);
      button.textContent = ok ? "已复制 ✓" : "请长按文字手动复制";
      button.setAttribute("data-copied", ok ? "yes" : "no");
      setTimeout(function () { button.textContent = label; }, 2500);
    });
  });

  var url = document.body.getAttribute("data-activity");
  var feed = document.getElementById("feed");
  if (url && feed && window.EventSource) {
    var source = new EventSource(url);
    source.addEventListener("activity", function (ev) {
      var data = JSON.parse(ev.data);
      var empty = document.getElementById("feed-empty");
      if (empty) { empty.remove(); }
      var li = document.createElement("li");
      var when = new Date(data.time);
      li.textContent = when.toLocaleTimeString("zh-CN", { hour: "2-digit", minute: "2-digit" }) + "  " + data.message;
      feed.insertBefore(li, feed.firstChild);
      while (feed.children.length > 30) { feed.removeChild(feed.lastChild); }
    });
    source.addEventListener("ready", function () { feed.setAttribute("data-live", "yes"); });
  }
})();
