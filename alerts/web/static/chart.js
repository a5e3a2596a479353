// The readings around an alert, drawn with uPlot (vendored), the threshold as a second line.
(function () {
  "use strict";
  var box = document.getElementById("chart");
  if (!box || typeof uPlot === "undefined") { return; }
  fetch(box.dataset.src, { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
    .then(function (s) {
      if (!s.ts.length) { document.getElementById("chart-empty").hidden = false; return; }
      var series = [{}, { label: s.metric, stroke: "#1565c0", width: 2 }];
      var data = [s.ts, s.values];
      if (s.threshold !== null) {
        series.push({ label: "threshold", stroke: "#c62828", dash: [6, 4], width: 1 });
        data.push(s.ts.map(function () { return s.threshold; }));
      }
      var width = function () { return Math.max(box.clientWidth, 240); };
      // Times in the alert service's zone (alerts.timezone), as the rest of the page.
      var tzDate = function (t) { return uPlot.tzDate(new Date(t * 1e3), s.timezone); };
      var opts = { width: width(), height: 220, series: series, tzDate: tzDate,
        scales: { x: { time: true } } };
      var plot = new uPlot(opts, data, box);
      box.dataset.points = String(s.ts.length);
      window.addEventListener("resize", function () { plot.setSize({ width: width(), height: 220 }); });
    })
    .catch(function () { document.getElementById("chart-empty").hidden = false; });
})();
