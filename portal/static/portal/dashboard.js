// The dashboard's daily-spend chart (Chart.js, vendored in vendor/). The same numbers are in the
// page as a table, so the page stays useful without JavaScript.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const canvas = document.getElementById("spend-chart");
  const source = document.getElementById("spend-data");
  if (!canvas || !source || typeof window.Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  const style = getComputedStyle(document.documentElement);
  const brand = style.getPropertyValue("--brand").trim() || "#2f5bea";
  const muted = style.getPropertyValue("--muted").trim() || "#5b6478";
  const line = style.getPropertyValue("--line").trim() || "#e3e6ee";
  // Amounts arrive as exact decimal strings; a chart only needs them for drawing.
  const costs = data.cost.map(Number);
  const day = (iso) => new Date(iso + "T00:00:00Z").toLocaleDateString(
    "en", { month: "short", day: "numeric", timeZone: "UTC" });

  new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels.map(day),
      datasets: [{
        label: "Credits",
        data: costs,
        backgroundColor: brand,
        borderRadius: 3,
        maxBarThickness: 22,
      }],
    },
    options: {
      maintainAspectRatio: false,
      animation: false,
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            label: (ctx) => {
              const requests = data.events[ctx.dataIndex];
              return ` ${data.cost[ctx.dataIndex].replace(/(\.\d{4})\d*$/, "$1")} credits · ` +
                `${requests} request${requests === 1 ? "" : "s"}`;
            },
          },
        },
      },
      scales: {
        x: { grid: { display: false }, ticks: { color: muted, maxRotation: 0, autoSkipPadding: 8 } },
        y: {
          beginAtZero: true,
          grid: { color: line },
          border: { display: false },
          ticks: { color: muted, precision: 2 },
          title: { display: true, text: "credits (USD)", color: muted },
        },
      },
    },
  });
});
