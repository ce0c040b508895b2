// Live updates for the status page. Without this script the page still
// works (a <noscript> refresh reloads it). With it, the server's event
// stream says when something changed and the main part of the page is
// fetched again and swapped in, at most once a second.
(function () {
  "use strict";

  // Confirm operator actions (the forms work without it).
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) {
      ev.preventDefault();
    }
  });

  var main = document.getElementById("main");
  var badge = document.getElementById("live");
  if (!main || !badge || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var busy = false, again = false, last = 0, timer = null;

  // A form field being filled in is not swapped away under the user.
  function typing() {
    var el = document.activeElement;
    return el && main.contains(el) && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);
  }

  function refresh() {
    timer = null;
    if (busy) { again = true; return; }
    if (typing()) { last = Date.now(); schedule(); return; }
    busy = true;
    last = Date.now();
    fetch(window.location.href, { headers: { "X-Partial": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.redirected || !r.ok) { throw new Error("status " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        main.replaceChildren.apply(main, Array.prototype.slice.call(doc.body.childNodes));
        document.body.setAttribute("data-updated", String(Date.now()));
      })
      .catch(function () { badge.className = "live off"; })
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (timer) { return; }
    var wait = Math.max(0, 1000 - (Date.now() - last));
    timer = window.setTimeout(refresh, wait);
  }

  var es = new EventSource("/events");
  es.addEventListener("open", function () { badge.className = "live on"; badge.textContent = "live"; });
  es.addEventListener("error", function () {
    badge.className = "live off";
    // Closed for good (signed out, daemon gone): only a reload helps.
    badge.textContent = es.readyState === EventSource.CLOSED ? "offline: reload the page" : "reconnecting";
  });
  es.addEventListener("change", schedule);
})();
