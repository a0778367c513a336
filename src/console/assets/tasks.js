// The back office's tasks view: the tasks of the person's queues (the REST API limits a
// back-office account to the queues its roles name), one task with its audit trail, and
// approve, reject with a reason, start, done and failed. The customer is told on their
// channel by the workflow, as for any other change.
(function () {
  'use strict';
  var el = SB.el, api = SB.api, clear = SB.clear;
  var selected = null;

  function amount(task) {
    var cents = task.payload && task.payload.amount_cents;
    return typeof cents === 'number' ? (cents / 100).toFixed(2) : '';
  }

  async function load() {
    var query = new URLSearchParams({ limit: '100' });
    var status = document.getElementById('task-status').value;
    var queue = document.getElementById('task-queue').value;
    if (status) query.set('status', status);
    if (queue) query.set('queue', queue);
    try {
      var page = await api('GET', '/api/v1/tasks?' + query.toString());
      var list = clear(document.getElementById('task-list'));
      var queues = document.getElementById('task-queue');
      if (!page.data.length) list.appendChild(el('li', { class: 'empty' }, 'No tasks.'));
      page.data.forEach(function (task) {
        if (!queues.querySelector('option[value="' + CSS.escape(task.queue) + '"]')) {
          queues.appendChild(el('option', { value: task.queue }, task.queue));
        }
        list.appendChild(el('li', {
          class: 'task-item' + (task.id === selected ? ' selected' : ''), 'data-id': task.id, 'data-status': task.status,
          'data-type': task.type, tabindex: '0', onclick: function () { show(task.id); },
        }, el('strong', {}, task.type), ' ', amount(task) ? el('span', { class: 'amount' }, amount(task)) : null,
          task.order_id ? el('span', {}, ' order ' + task.order_id) : null,
          el('span', { class: 'status' }, ' ' + task.status), el('span', { class: 'queue' }, ' · ' + task.queue)));
      });
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  async function show(id) {
    selected = id;
    try {
      var task = await api('GET', '/api/v1/tasks/' + id);
      var events = await api('GET', '/api/v1/tasks/' + id + '/events');
      var pane = clear(document.getElementById('task-detail'));
      pane.dataset.id = task.id;
      pane.dataset.status = task.status;
      pane.appendChild(el('h2', {}, task.type + (task.order_id ? ' · order ' + task.order_id : '')));
      pane.appendChild(el('p', { id: 'task-status-text' }, 'Status: ' + task.status + (task.approver_role ? ' (needs ' + task.approver_role + ')' : '')));
      pane.appendChild(el('pre', { class: 'payload' }, JSON.stringify(task.payload, null, 2)));
      var reason = el('input', { id: 'task-reason', placeholder: 'Reason (required to reject)', 'aria-label': 'Reason' });
      var bar = el('div', { class: 'actions' }, reason);
      function act(idName, label, run) {
        bar.appendChild(el('button', { type: 'button', id: idName, onclick: async function () {
          try { await run(); SB.notice(label + ': done'); await show(id); await load(); } catch (error) { SB.notice(error.message, 'error'); }
        } }, label));
      }
      if (task.status === 'awaiting_approval') {
        act('approve', 'Approve', function () { return api('POST', '/api/v1/tasks/' + id + '/approve', { reason: reason.value || null }); });
        act('reject', 'Reject', function () {
          if (!reason.value.trim()) throw new Error('Say why you reject it');
          return api('POST', '/api/v1/tasks/' + id + '/reject', { reason: reason.value });
        });
      }
      if (task.status === 'approved') act('start', 'Start', function () { return api('POST', '/api/v1/tasks/' + id + '/transitions', { status: 'in_progress', reason: reason.value || null }); });
      if (task.status === 'in_progress') {
        act('done', 'Mark done', function () { return api('POST', '/api/v1/tasks/' + id + '/transitions', { status: 'done', reason: reason.value || null }); });
        act('failed', 'Mark failed', function () { return api('POST', '/api/v1/tasks/' + id + '/transitions', { status: 'failed', reason: reason.value || null }); });
      }
      pane.appendChild(bar);
      pane.appendChild(el('h3', {}, 'Audit trail'));
      pane.appendChild(el('ol', { id: 'audit', class: 'audit' }, events.data.map(function (event) {
        return el('li', {}, (event.from_status ? event.from_status + ' → ' : '') + event.to_status + ' by ' + event.actor +
          (event.reason ? ' (' + event.reason + ')' : '') + ' · ' + new Date(event.created_at).toLocaleString());
      })));
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.getElementById('task-status').addEventListener('change', load);
    document.getElementById('task-queue').addEventListener('change', load);
    load();
    setInterval(load, 10000);
  });
})();
