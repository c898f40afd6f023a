// Reading time for the tracked page, by the tracking protocol (README, "Browser protocol"):
// only time the page is visible AND focused counts; a heartbeat every interval;
// a flush with sendBeacon when the page is hidden (visibilitychange) or left (pagehide).
// A page served while tracking was down has no view but a data-start URL: it asks for
// its view there (3 s, then backing off to a minute, only while visible), and reading
// counts from when the view started.
(function () {
  "use strict";
  var body = document.body;
  var view = body.getAttribute("data-view");
  var start = body.getAttribute("data-start");
  var url = body.getAttribute("data-beacon");
  var interval = (parseInt(body.getAttribute("data-interval"), 10) || 10) * 1000;
  if (!url || (!view && !start)) { return; }
  var seq = 0;
  var engaged = 0;          // engaged ms not yet sent
  var since = null;         // when the current engaged stretch began (performance.now())
  var maxScroll = 0;
  var ended = false;

  function active() { return document.visibilityState === "visible" && document.hasFocus(); }
  function settle() {       // move the running stretch into `engaged`
    var now = performance.now();
    if (since !== null) { engaged += now - since; }
    since = active() ? now : null;
  }
  function scroll() {
    var doc = document.documentElement;
    var seen = (window.scrollY + window.innerHeight) / Math.max(doc.scrollHeight, 1);
    maxScroll = Math.max(maxScroll, Math.min(100, Math.round(seen * 100)));
  }
  function send(end) {
    settle();
    if (ended) { return; }
    if (!view) { ended = !!end; return; }  // no view (yet): nothing to send; once left, stop asking for one
    var delta = Math.round(engaged);
    if (delta <= 0 && !end) { return; }
    engaged -= delta;
    seq += 1;
    var payload = JSON.stringify({view: view, seq: seq, engaged_ms: delta, scroll: maxScroll, end: !!end});
    if (end) { ended = true; }
    if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([payload], {type: "text/plain"}))) { return; }
    fetch(url, {method: "POST", body: payload, keepalive: true, credentials: "same-origin"}).catch(function () {});
  }

  scroll();
  settle();
  window.addEventListener("scroll", scroll, {passive: true});
  window.addEventListener("focus", settle);
  window.addEventListener("blur", settle);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { send(false); } else { settle(); }
  });
  window.addEventListener("pagehide", function () { send(true); });

  function begin(started) {  // the view exists now: count from here
    view = started.view;
    interval = (started.interval || 10) * 1000;
    engaged = 0;
    since = active() ? performance.now() : null;
    var forward = document.getElementById("forward-url");
    if (started.forward && forward) {
      forward.value = started.forward;
      forward.closest("footer").hidden = false;
    }
    setInterval(function () { send(false); }, interval);
  }
  function ask(delay) {
    setTimeout(function () {
      if (ended) { return; }
      if (document.visibilityState !== "visible") { ask(delay); return; }  // nobody reading: nothing to count
      var later = function () { ask(Math.min(delay * 2, 60000)); };
      fetch(start, {method: "POST", credentials: "same-origin"}).then(function (answer) {
        if (answer.ok) { return answer.json().then(begin, later); }
        if (answer.status === 503 || answer.status === 429) { later(); }  // still down, or busy: a 404 / 410 ends it
      }, later);
    }, delay * (0.5 + Math.random()));  // spread: every page served in an outage asks when it ends
  }
  if (view) { setInterval(function () { send(false); }, interval); } else { ask(3000); }
})();
