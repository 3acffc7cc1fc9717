/* The console's charts: every `[data-chart]` placeholder rendered by config/charts.py is drawn here with the
   vendored Chart.js. The data comes from the JSON script block the placeholder names (never inline code). */
(function () {
  "use strict";

  var COLOURS = ["#0d6efd", "#fd7e14", "#198754", "#6f42c1", "#dc3545", "#20c997", "#d63384", "#6c757d"];
  var DASHES = [[], [6, 3], [2, 2], [8, 3, 2, 3]];
  // Every tick says its date: a chart of the last hour and one of the last month read alike.
  var DATE_TICKS = { minute: "MMM d HH:mm", hour: "MMM d HH:mm", day: "MMM d", week: "MMM d", month: "MMM yyyy" };

  function axisTitle(text) {
    return { display: Boolean(text), text: text || "" };
  }

  function emptyState(element, message) {
    var note = document.createElement("p");
    note.className = "mw-chart-empty";
    note.textContent = message;
    element.replaceChildren(note);
    element.style.height = "auto";
  }

  function lineConfig(spec) {
    var datasets = spec.datasets.map(function (d, i) {
      var colour = COLOURS[i % COLOURS.length];
      return {
        label: d.label,
        data: d.points.map(function (p) { return { x: p[0], y: p[1] }; }),
        borderColor: colour,
        backgroundColor: colour,
        borderWidth: 2,
        borderDash: DASHES[i % DASHES.length], // lines on top of each other stay visible
        pointRadius: d.points.length > 60 ? 0 : 3,
        pointHoverRadius: 5,
        tension: 0,
      };
    });
    var y = { title: axisTitle(spec.y_label), beginAtZero: spec.y_min === 0 };
    if (spec.y_min !== null && spec.y_min !== undefined) y.min = spec.y_min;
    if (spec.y_max !== null && spec.y_max !== undefined) y.max = spec.y_max;
    return {
      type: "line",
      data: { datasets: datasets },
      options: {
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: {
            type: "time",
            bounds: "ticks", // the axis runs from tick to tick: points a minute apart still get dated ticks
            time: spec.per_day ? { unit: "day", tooltipFormat: "yyyy-MM-dd", displayFormats: DATE_TICKS }
              : { minUnit: "minute", tooltipFormat: "yyyy-MM-dd HH:mm", displayFormats: DATE_TICKS },
            title: axisTitle(spec.x_label || (spec.per_day ? "day" : "time")),
          },
          y: y,
        },
        plugins: { legend: { position: "bottom" }, title: { display: Boolean(spec.title), text: spec.title } },
      },
    };
  }

  function barsConfig(spec) {
    return {
      type: "bar",
      data: {
        labels: spec.labels,
        datasets: spec.datasets.map(function (d, i) {
          return { label: d.label, data: d.values, backgroundColor: COLOURS[i % COLOURS.length] };
        }),
      },
      options: {
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: { title: axisTitle(spec.x_label) }, y: { beginAtZero: true, title: axisTitle(spec.y_label) } },
        plugins: { legend: { position: "bottom" }, title: { display: Boolean(spec.title), text: spec.title } },
      },
    };
  }

  function sparkConfig(spec) {
    var config = lineConfig(spec);
    config.data.datasets.forEach(function (d) { d.pointRadius = 0; d.fill = false; d.borderWidth = 1.5; });
    config.options.scales = {
      x: { type: "time", display: false },
      y: { display: false, beginAtZero: true },
    };
    config.options.plugins.legend = { display: false };
    config.options.plugins.title = { display: false };
    return config;
  }

  function pointsConfig(spec) {
    // values over labelled steps (a metric across versions): y fitted to the values, so small differences show
    var config = barsConfig(spec);
    config.type = "line";
    config.data.datasets.forEach(function (d, i) {
      d.borderColor = COLOURS[i % COLOURS.length];
      d.pointRadius = 4;
      d.borderDash = DASHES[i % DASHES.length];
    });
    config.options.scales.y.beginAtZero = false;
    return config;
  }

  var BUILDERS = { line: lineConfig, bars: barsConfig, spark: sparkConfig, points: pointsConfig };

  function draw(element, fromDocument) {
    // a refreshed region's JSON blocks came with it (live.js), or are looked up in the document they came from
    var source = element.parentNode.querySelector("script[id='" + element.dataset.chart + "']") ||
      (fromDocument || document).getElementById(element.dataset.chart);
    if (!source) return;
    var spec = JSON.parse(source.textContent);
    element.style.height = (element.dataset.height || 240) + "px"; // set from script: no inline style attributes
    if (!spec.datasets.length) {
      emptyState(element, spec.empty);
      return;
    }
    if (typeof Chart === "undefined") {
      emptyState(element, "The chart library did not load.");
      return;
    }
    var chart = new Chart(element.querySelector("canvas"), BUILDERS[spec.kind](spec));
    element.mwChart = chart; // for people (and tests) inspecting a page
  }

  function drawAll(root, fromDocument) {
    (root || document).querySelectorAll("[data-chart]").forEach(function (element) { draw(element, fromDocument); });
  }

  window.mwCharts = { drawAll: drawAll };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(); });
  } else {
    drawAll();
  }
})();
