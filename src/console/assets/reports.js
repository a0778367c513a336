// Reports: the figures of /api/v1/reports for a period, per day or hour, filtered by channel
// and team, with charts drawn by the vendored Chart.js.
(function () {
  'use strict';
  var el = SB.el, api = SB.api, clear = SB.clear;
  var charts = {};

  function seconds(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    return (ms / 60000).toFixed(1) + ' min';
  }

  function percent(share) {
    return share === null || share === undefined ? '—' : Math.round(share * 100) + '%';
  }

  function draw(id, type, labels, datasets) {
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart(document.getElementById(id), {
      type: type,
      data: { labels: labels, datasets: datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false },
    });
  }

  function figure(label, value, id) {
    return el('div', { class: 'figure', id: id }, el('span', { class: 'value' }, String(value)), el('span', { class: 'name' }, label));
  }

  async function load(event) {
    if (event) event.preventDefault();
    var query = new URLSearchParams();
    ['from', 'to', 'bucket', 'channel', 'team'].forEach(function (name) {
      var value = document.getElementById('report-' + name).value;
      if (value) query.set(name, value);
    });
    try {
      var report = await api('GET', '/api/v1/reports?' + query.toString());
      var c = report.conversations;
      var box = clear(document.getElementById('report-figures'));
      box.appendChild(figure('conversations', c.total, 'figure-total'));
      box.appendChild(figure('contained by the bot', percent(c.containment), 'figure-containment'));
      box.appendChild(figure('handed off', percent(c.handoff_rate), 'figure-handoff'));
      box.appendChild(figure('first response, median', seconds(c.first_response.median_ms), 'figure-frt'));
      box.appendChild(figure('first response, p90', seconds(c.first_response.p90_ms)));
      box.appendChild(figure('resolution, median', seconds(c.resolution.median_ms)));
      box.appendChild(figure('resolution, p90', seconds(c.resolution.p90_ms)));
      box.appendChild(figure('satisfaction', report.satisfaction.average === null ? '—' : report.satisfaction.average + ' / 5', 'figure-csat'));
      box.appendChild(figure('tasks', report.tasks.total));
      box.appendChild(figure('time to approval, median', seconds(report.tasks.time_to_approval.median_ms)));
      var usage = report.llm_usage;
      if (usage.requests > 0) {
        box.appendChild(figure('model tokens', usage.total_tokens.toLocaleString(), 'figure-llm-tokens'));
        box.appendChild(figure('model tokens per conversation', usage.tokens_per_conversation.toLocaleString()));
      }
      var labels = report.series.map(function (s) { return report.bucket === 'day' ? s.start.slice(0, 10) : s.start.slice(5, 16).replace('T', ' '); });
      draw('chart-volume', 'bar', labels, [
        { label: 'conversations', data: report.series.map(function (s) { return s.conversations; }) },
        { label: 'handed off', data: report.series.map(function (s) { return s.handoffs; }) },
        { label: 'contained', data: report.series.map(function (s) { return s.contained; }) },
      ]);
      draw('chart-channels', 'doughnut', Object.keys(c.by_channel), [{ data: Object.values(c.by_channel) }]);
      draw('chart-reasons', 'bar', Object.keys(c.handoff_reasons), [{ label: 'handoffs', data: Object.values(c.handoff_reasons) }]);
      draw('chart-satisfaction', 'bar', Object.keys(report.satisfaction.distribution), [{ label: 'ratings', data: Object.values(report.satisfaction.distribution) }]);
      draw('chart-tasks', 'bar', Object.keys(report.tasks.by_state), [{ label: 'tasks', data: Object.values(report.tasks.by_state) }]);
      document.body.dataset.loaded = 'true';
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  document.addEventListener('DOMContentLoaded', function () {
    var today = new Date();
    var tomorrow = new Date(today.getTime() + 86400000);
    var weekAgo = new Date(today.getTime() - 6 * 86400000);
    document.getElementById('report-to').value = tomorrow.toISOString().slice(0, 10);
    document.getElementById('report-from').value = weekAgo.toISOString().slice(0, 10);
    document.getElementById('report-filters').addEventListener('submit', load);
    load();
  });
})();
