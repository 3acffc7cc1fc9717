/* Live regions: an element with `data-live` (and an id) is refreshed in place every `data-live` seconds from the same
   page, fetched again in the background; its charts are drawn again. No full reload, so a form being filled in
   elsewhere on the page is left alone. Paused while the tab is hidden. */
(function () {
  "use strict";

  function refresh(regions) {
    if (document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "live" } })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (region) {
          var replacement = fresh.getElementById(region.id);
          if (!replacement) return;
          region.innerHTML = replacement.innerHTML;
          region.dataset.refreshedAt = new Date().toISOString();
          if (window.mwCharts) window.mwCharts.drawAll(region, fresh);
        });
      })
      .catch(function () { /* the next round tries again */ });
  }

  function start() {
    var regions = Array.prototype.slice.call(document.querySelectorAll("[data-live][id]"));
    if (!regions.length) return;
    var seconds = Math.max(2, Math.min.apply(null, regions.map(function (r) { return Number(r.dataset.live) || 15; })));
    window.setInterval(function () { refresh(regions); }, seconds * 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
