// invoice-sync dashboard: the few things that need a script. No inline scripts (CSP); data for
// charts comes from <script type="application/json"> blocks the server renders.
(function () {
  "use strict";

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // Copy buttons: copy the named input's value, and say so for screen readers too.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) return;
    var input = document.getElementById(button.dataset.copy);
    var status = document.getElementById("copy-status");
    input.select();
    var done = function () { if (status) status.textContent = "Copied to the clipboard."; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () {
        if (status) status.textContent = "Select the token and copy it (Ctrl+C).";
      });
    } else {
      document.execCommand("copy");
      done();
    }
  });

  // Typed confirmation: the delete button stays disabled until the name is typed exactly.
  function watchConfirm() {
    document.querySelectorAll("button[data-enable-when]").forEach(function (button) {
      var input = document.getElementById(button.dataset.enableWhen);
      var check = function () { button.disabled = input.value !== input.dataset.mustEqual; };
      input.addEventListener("input", check);
      check();
    });
  }

  // A progress poll answered 401 means the login ended (token revoked, logged out elsewhere):
  // reload, which lands on the login page instead of a bar that silently stops.
  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.xhr && event.detail.xhr.status === 401) window.location.reload();
  });

  var palette = ["#14508c", "#c1550b", "#2a7f3e", "#8e2c8e", "#6b5b00", "#0b7285", "#a4161a"];

  function activityChart() {
    var data = readJson("activity-data");
    var canvas = document.getElementById("activity-chart");
    if (!data || !canvas || !window.Chart) return;
    new Chart(canvas, {
      type: "bar",
      data: { labels: data.hours.map(function (h) { return h.slice(5, 13).replace("T", " ") + "h"; }),
              datasets: [{ label: "Numbers issued", data: data.counts, backgroundColor: palette[0] }] },
      options: { maintainAspectRatio: false, animation: false,
                 scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }
    });
  }

  function revenueChart() {
    var data = readJson("revenue-data");
    var canvas = document.getElementById("revenue-chart");
    if (!data || !canvas || !window.Chart) return;
    var labels = data.months.slice();
    data.forecast.months.forEach(function (m) { if (labels.indexOf(m) < 0) labels.push(m); });
    var pad = function (values, months) {
      return labels.map(function (m) { var i = months.indexOf(m); return i < 0 ? null : Number(values[i]); });
    };
    var datasets = data.series.map(function (s, i) {
      return { type: "bar", label: s.system, data: pad(s.gross, data.months), stack: "revenue",
               backgroundColor: palette[i % palette.length] };
    });
    datasets.push({ type: "line", label: "Forecast", data: pad(data.forecast.revenue, data.forecast.months),
                    borderColor: "#1b1f24", borderDash: [6, 4], pointStyle: "rectRot", pointRadius: 4,
                    backgroundColor: "#ffffff", spanGaps: false });
    new Chart(canvas, {
      data: { labels: labels, datasets: datasets },
      options: { maintainAspectRatio: false, animation: false,
                 scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: data.currency } } } }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    watchConfirm();
    activityChart();
    revenueChart();
  });
})();
