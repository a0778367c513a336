// The agent workspace: the queue (views, filters, counts, late items highlighted) kept live
// by the console feed; one conversation with the contact's history across channels, the
// handoff package and the customer panel, kept live by the conversation's event stream (with
// the customer's typing); reply, private notes, canned replies, labels, claim, assign,
// hand back and resolve.
(function () {
  'use strict';
  var el = SB.el, api = SB.api, clear = SB.clear;
  var me = document.body.dataset.userId;
  // drafts: the reply being written, per conversation. The pane is rebuilt whenever the
  // conversation changes (owner, labels, tasks), and a draft must outlive that.
  var state = { view: 'unassigned', items: [], selected: null, data: null, stream: null, lastSeq: 0, drafts: {} };
  var reloadTimer = null;

  function statusLabel(item) {
    if (item.status === 'queued') return 'waiting in ' + item.owner_name;
    if (item.status === 'agent') return item.owner === 'agent:' + me ? 'with you' : 'with ' + item.owner_name;
    if (item.status === 'bot') return 'with the bot';
    return item.status;
  }

  function renderQueue(view) {
    ['unassigned', 'mine', 'team', 'all'].forEach(function (name) {
      document.getElementById('count-' + name).textContent = view.counts[name];
    });
    document.querySelectorAll('.views button').forEach(function (button) {
      button.setAttribute('aria-selected', button.dataset.view === state.view ? 'true' : 'false');
    });
    var channels = document.getElementById('filter-channel');
    view.items.forEach(function (item) {
      if (!channels.querySelector('option[value="' + CSS.escape(item.channel) + '"]')) {
        channels.appendChild(el('option', { value: item.channel }, item.channel_kind + ' · ' + item.channel));
      }
    });
    var list = clear(document.getElementById('queue-list'));
    if (!view.items.length) list.appendChild(el('li', { class: 'empty' }, 'Nothing here.'));
    view.items.forEach(function (item) {
      var late = item.waiting_late || item.first_response_late;
      var node = el('li', {
        class: 'queue-item' + (late ? ' late' : '') + (item.id === state.selected ? ' selected' : ''),
        'data-id': item.id, 'data-status': item.status, tabindex: '0',
        onclick: function () { select(item.id); },
      },
      el('div', { class: 'line' },
        el('strong', {}, item.contact_name || 'Customer'),
        el('span', { class: 'channel' }, item.channel_kind + ' · ' + item.channel),
        item.language ? el('span', { class: 'lang' }, item.language) : null),
      el('div', { class: 'line small' },
        el('span', { class: 'status' }, statusLabel(item)),
        item.waiting_since_ms ? el('span', { class: 'waiting' + (item.waiting_late ? ' breached' : '') }, 'waiting ' + SB.ago(item.waiting_since_ms, view.now_ms)) : null,
        item.first_response_due_ms ? el('span', { class: 'due' + (item.first_response_late ? ' breached' : '') },
          item.first_response_late ? 'first reply late' : 'first reply due in ' + SB.ago(view.now_ms - (item.first_response_due_ms - view.now_ms), view.now_ms)) : null),
      item.labels.length ? el('div', { class: 'labels' }, item.labels.map(function (l) { return el('span', { class: 'label' }, l); })) : null,
      item.last_message ? el('div', { class: 'last' }, item.last_message.author + ': ' + item.last_message.text) : null);
      node.addEventListener('keydown', function (event) { if (event.key === 'Enter') select(item.id); });
      list.appendChild(node);
    });
  }

  async function loadQueue() {
    var query = new URLSearchParams({ view: state.view });
    var channel = document.getElementById('filter-channel').value;
    var language = document.getElementById('filter-language').value;
    if (channel) query.set('channel', channel);
    if (language) query.set('language', language);
    try {
      var view = await api('GET', '/console/api/queue?' + query.toString());
      state.items = view.items;
      renderQueue(view);
      return view;
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  function reloadSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(loadQueue, 250);
  }

  function follow(since) {
    var feed = new EventSource('/console/api/feed?since=' + since);
    ['items', 'row', 'resync'].forEach(function (kind) { feed.addEventListener(kind, reloadSoon); });
  }

  function fill(text) {
    var data = state.data;
    var orders = Array.isArray(data.contact.orders) ? data.contact.orders : [];
    var values = {
      'customer.name': data.contact.name || 'there',
      'agent.name': data.me.name,
      'conversation.channel': data.conversation.channel_kind,
      'order.id': orders.length ? orders[0].id : '',
    };
    return text.replace(/\{\{\s*([a-z.]+)\s*\}\}/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? values[name] : whole;
    });
  }

  function failedNote(error) {
    return el('span', { class: 'failed' }, 'Not delivered' + (error ? ': ' + error : ''));
  }

  function messageNode(message) {
    var who = message.author === 'agent' ? (message.author_name || 'agent') : message.author;
    var files = message.attachments || [];
    return el('li', { class: 'msg', 'data-author': message.author, 'data-id': message.id },
      el('span', { class: 'who' }, who),
      el('span', { class: 'text' }, message.text,
        files.length ? el('span', { class: 'attachments' }, files.map(function (file) {
          return el('a', { href: file.url, download: file.name, title: file.mime_type }, file.name);
        })) : null,
        message.failed !== undefined && message.failed !== null ? failedNote(message.failed) : null),
      el('time', {}, SB.time(message.at_ms)));
  }

  function renderHistory(messages) {
    var list = clear(document.getElementById('history'));
    var current = null;
    messages.forEach(function (message) {
      if (message.conversation_id !== current) {
        current = message.conversation_id;
        var here = current === state.selected;
        list.appendChild(el('li', { class: 'divider' }, (here ? 'This conversation' : 'Earlier conversation') + ' · ' + message.channel));
      }
      list.appendChild(messageNode(message));
    });
    list.scrollTop = list.scrollHeight;
  }

  function handoffBox(handoff) {
    if (!handoff) return el('section', { class: 'handoff', id: 'handoff' }, el('p', { class: 'empty' }, 'No handoff: the bot had this conversation.'));
    var summary = handoff.summary || {};
    var slots = summary.slots || {};
    var classifier = summary.classifier || {};
    var passages = Array.isArray(summary.last_passages) ? summary.last_passages : [];
    return el('section', { class: 'handoff', id: 'handoff' },
      el('h3', {}, 'Handoff package'),
      el('dl', {},
        el('dt', {}, 'Reason'), el('dd', { id: 'handoff-reason' }, String(handoff.reason || '')),
        el('dt', {}, 'Intent'), el('dd', { id: 'handoff-intent' }, String(summary.intent || '—')),
        el('dt', {}, 'Language'), el('dd', {}, String(summary.language || '—')),
        el('dt', {}, 'Confidence'), el('dd', {}, classifier.probability !== undefined ? Math.round(classifier.probability * 100) + '% (' + (classifier.best || '') + ')' : '—'),
        el('dt', {}, 'Last message'), el('dd', { id: 'handoff-last' }, String(summary.last_message || '')),
        summary.model_summary ? el('dt', {}, 'Summary (model)') : null,
        summary.model_summary ? el('dd', { id: 'handoff-model-summary' }, String(summary.model_summary)) : null,
        summary.llm_usage ? el('dt', {}, 'Model tokens') : null,
        summary.llm_usage ? el('dd', {}, String((summary.llm_usage.prompt_tokens || 0) + (summary.llm_usage.completion_tokens || 0)) + ' in ' + String(summary.llm_usage.requests || 0) + ' requests') : null,
        handoff.out_of_hours ? el('dt', {}, 'Out of hours') : null, handoff.out_of_hours ? el('dd', {}, 'yes: the customer was told when people are back') : null),
      Object.keys(slots).length ? el('table', { class: 'slots' }, Object.keys(slots).map(function (name) {
        return el('tr', {}, el('th', {}, name), el('td', {}, JSON.stringify(slots[name])));
      })) : null,
      passages.length ? el('ul', { class: 'passages' }, passages.map(function (p) {
        return el('li', {}, (p.title || p.source || 'passage') + (p.section ? ' · ' + p.section : ''));
      })) : null);
  }

  function customerPanel(contact) {
    var panel = clear(document.getElementById('customer-panel'));
    var orders = Array.isArray(contact.orders) ? contact.orders : [];
    var tasks = Array.isArray(contact.tasks) ? contact.tasks : [];
    panel.appendChild(el('h2', {}, contact.name || contact.emails[0] || 'Customer'));
    panel.appendChild(el('h3', {}, 'Identities'));
    panel.appendChild(el('ul', { id: 'identities' }, contact.identities.map(function (i) {
      return el('li', {}, i.channel + ': ' + i.platform_user_id + (i.verified ? ' ✓' : ''));
    }).concat(contact.emails.map(function (email) { return el('li', {}, 'email: ' + email); }))));
    panel.appendChild(el('h3', {}, 'Orders'));
    panel.appendChild(orders.length ? el('ul', { id: 'orders' }, orders.map(function (o) {
      return el('li', {}, o.id + ' · ' + o.status + ' · ' + (o.total_cents / 100).toFixed(2) + ' ' + o.currency);
    })) : el('p', { class: 'empty' }, contact.orders && contact.orders.error ? contact.orders.error : 'None.'));
    panel.appendChild(el('h3', {}, 'Tasks'));
    panel.appendChild(tasks.length ? el('ul', { id: 'tasks' }, tasks.map(function (t) {
      return el('li', { 'data-status': t.status }, t.type + (t.order_id ? ' · order ' + t.order_id : '') + ' · ' + t.status);
    })) : el('p', { class: 'empty' }, 'None.'));
    panel.appendChild(el('h3', {}, 'Conversations'));
    panel.appendChild(el('ul', { id: 'past' }, contact.conversations.map(function (c) {
      return el('li', {}, c.channel + ' · ' + c.status + ' · ' + SB.time(c.created_at_ms) + (c.rating ? ' · rated ' + c.rating + '/5' : ''));
    })));
  }

  function actions(data) {
    var item = data.conversation;
    var mine = item.owner === 'agent:' + me;
    var admin = document.body.dataset.role === 'admin';
    var bar = el('div', { class: 'actions', id: 'actions' });
    function act(id, label, run) {
      bar.appendChild(el('button', { type: 'button', id: id, onclick: async function () {
        try { await run(); await select(state.selected); reloadSoon(); } catch (error) { SB.notice(error.message, 'error'); }
      } }, label));
    }
    if (item.status === 'queued') act('claim', 'Claim', function () { return api('POST', '/console/api/conversations/' + item.id + '/claim', { expected_version: data.version }); });
    if (item.status === 'bot' || (item.status === 'agent' && !mine && admin)) act('take-over', 'Take over', function () { return api('POST', '/console/api/conversations/' + item.id + '/claim', { expected_version: data.version }); });
    if (mine || admin || item.status === 'queued') {
      if (item.status === 'agent' || item.status === 'queued') act('hand-back', 'Hand back to the bot', function () { return api('POST', '/console/api/conversations/' + item.id + '/hand-back'); });
      if (item.status !== 'resolved') act('resolve', 'Resolve', function () { return api('POST', '/console/api/conversations/' + item.id + '/resolve'); });
      if (item.status !== 'resolved') {
        var target = el('select', { id: 'assign-target', 'aria-label': 'Assign to' },
          data.agents.filter(function (a) { return a.id !== me; }).map(function (a) { return el('option', { value: 'agent:' + a.id }, a.name); }),
          data.teams.map(function (t) { return el('option', { value: 'team:' + t }, 'team ' + t); }));
        bar.appendChild(target);
        act('assign', 'Assign', function () {
          var value = target.value.split(':');
          var body = value[0] === 'agent' ? { agent_id: value.slice(1).join(':') } : { team: value.slice(1).join(':') };
          return api('POST', '/console/api/conversations/' + item.id + '/assign', body);
        });
      }
    }
    return bar;
  }

  function render(data) {
    var item = data.conversation;
    var mine = item.owner === 'agent:' + me;
    var pane = document.getElementById('conversation');
    var previous = document.getElementById('reply-text');
    var writing = previous && pane.dataset.id === item.id && document.activeElement === previous
      ? { start: previous.selectionStart, end: previous.selectionEnd } : null;
    clear(pane);
    pane.dataset.id = item.id;
    pane.dataset.status = item.status;
    pane.dataset.owner = item.owner;
    pane.appendChild(el('header', {},
      el('h2', {}, item.contact_name || (data.contact.emails[0]) || 'Customer'),
      el('span', { class: 'channel' }, item.channel_kind + ' · ' + item.channel),
      el('span', { class: 'status', id: 'conversation-status' }, statusLabel(item)),
      actions(data)));
    if (data.unreachable) {
      pane.appendChild(el('p', { class: 'unreachable', id: 'unreachable', role: 'alert' },
        'Replies cannot reach the customer on this thread since ' + SB.time(data.unreachable.since_ms) + ': ' + data.unreachable.reason));
    }
    pane.appendChild(handoffBox(data.handoff));
    pane.appendChild(el('ul', { id: 'history', class: 'history', 'aria-live': 'polite' }));
    pane.appendChild(el('p', { id: 'customer-typing', class: 'typing', hidden: true }, 'The customer is typing…'));
    var canned = el('select', { id: 'canned', 'aria-label': 'Canned reply' }, el('option', { value: '' }, 'Canned reply…'),
      data.canned_replies.map(function (c) { return el('option', { value: c.id }, '/' + c.shortcut + ' · ' + c.title); }));
    var text = el('textarea', { id: 'reply-text', rows: '3', placeholder: mine ? 'Write to the customer' : 'Claim the conversation to reply; notes are always possible' });
    text.value = state.drafts[item.id] || '';
    function keepDraft() {
      if (text.value) state.drafts[item.id] = text.value;
      else delete state.drafts[item.id];
    }
    canned.addEventListener('change', function () {
      var chosen = data.canned_replies.find(function (c) { return c.id === canned.value; });
      if (chosen) text.value = fill(chosen.body);
      keepDraft();
      canned.value = '';
      text.focus();
    });
    var typingTimer = null, typingSent = 0;
    text.addEventListener('input', function () {
      keepDraft();
      if (!mine) return;
      if (Date.now() - typingSent > 3000) {
        typingSent = Date.now();
        api('POST', '/console/api/conversations/' + item.id + '/typing', { active: true }).catch(function () {});
      }
      clearTimeout(typingTimer);
      typingTimer = setTimeout(function () {
        typingSent = 0;
        api('POST', '/console/api/conversations/' + item.id + '/typing', { active: false }).catch(function () {});
      }, 4000);
    });
    async function sendWith(path, clearAfter) {
      var value = text.value.trim();
      if (!value) return;
      var sent = text.value;
      try {
        await api('POST', '/console/api/conversations/' + item.id + path, { text: value });
        if (!clearAfter) return;
        // The pane may have been rebuilt meanwhile: clear whichever box holds what was sent,
        // unless the agent has written on since.
        if (state.drafts[item.id] === sent) delete state.drafts[item.id];
        var current = document.getElementById('reply-text');
        if (current && current.value === sent && document.getElementById('conversation').dataset.id === item.id) current.value = '';
        if (text !== current && text.value === sent) text.value = '';
      } catch (error) { SB.notice(error.message, 'error'); }
    }
    pane.appendChild(el('div', { class: 'composer' }, canned, text,
      el('div', { class: 'buttons' },
        el('button', { type: 'button', id: 'send-reply', disabled: !mine, onclick: function () { sendWith('/reply', true); } }, 'Send reply'),
        el('button', { type: 'button', id: 'add-note', class: 'quiet', onclick: function () { sendWith('/notes', true); } }, 'Add private note'))));
    var labels = el('input', { id: 'labels', value: item.labels.join(', '), placeholder: 'labels, comma-separated', 'aria-label': 'Labels' });
    pane.appendChild(el('div', { class: 'labels-edit' }, labels, el('button', { type: 'button', id: 'save-labels', onclick: async function () {
      try {
        await api('PUT', '/console/api/conversations/' + item.id + '/labels', { labels: labels.value.split(',').map(function (l) { return l.trim(); }).filter(Boolean) });
        SB.notice('Labels saved');
      } catch (error) { SB.notice(error.message, 'error'); }
    } }, 'Save labels')));
    pane.appendChild(el('section', { class: 'notes' }, el('h3', {}, 'Private notes'),
      el('ul', { id: 'notes' }, data.notes.map(function (n) { return el('li', {}, el('strong', {}, n.author_name + ': '), n.text); }))));
    renderHistory(data.history);
    customerPanel(data.contact);
    if (writing) {
      text.focus();
      text.setSelectionRange(writing.start, writing.end);
    }
  }

  function live(id, after) {
    if (state.stream) state.stream.close();
    var stream = new EventSource('/console/api/conversations/' + id + '/stream?after=' + after);
    state.stream = stream;
    var typingTimer = null;
    stream.addEventListener('message.stored', function (event) {
      var data = JSON.parse(event.data);
      var list = document.getElementById('history');
      if (!list || list.querySelector('[data-id="' + CSS.escape(data.data.message_id) + '"]')) return;
      var author = data.data.author;
      list.appendChild(messageNode({ id: data.data.message_id, author: author, author_name: author === 'agent' ? 'agent' : null, text: data.data.text, at_ms: data.created_at_ms }));
      list.scrollTop = list.scrollHeight;
      if (author === 'customer') document.getElementById('customer-typing').hidden = true;
    });
    stream.addEventListener('message.failed', function (event) {
      var data = JSON.parse(event.data);
      var node = document.querySelector('#history [data-id="' + CSS.escape(data.data.message_id || '') + '"] .text');
      if (node && !node.querySelector('.failed')) node.appendChild(failedNote(data.data.error));
    });
    stream.addEventListener('typing', function (event) {
      var data = JSON.parse(event.data);
      if (data.data.author !== 'customer') return;
      var note = document.getElementById('customer-typing');
      if (!note) return;
      note.hidden = !data.data.active;
      clearTimeout(typingTimer);
      if (data.data.active) typingTimer = setTimeout(function () { note.hidden = true; }, 8000);
    });
    stream.addEventListener('note.added', function (event) {
      var data = JSON.parse(event.data);
      var list = document.getElementById('notes');
      if (list) list.appendChild(el('li', {}, el('strong', {}, data.data.author_name + ': '), data.data.text));
    });
    ['owner.changed', 'labels.changed', 'task.changed'].forEach(function (kind) {
      stream.addEventListener(kind, function () { if (state.selected === id) refresh(id); });
    });
  }

  async function refresh(id) {
    try {
      var data = await api('GET', '/console/api/conversations/' + id);
      if (state.selected !== id) return;
      state.data = data;
      render(data);
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  async function select(id) {
    state.selected = id;
    history.replaceState(null, '', '#' + state.view + '/' + id);
    document.querySelectorAll('.queue-item').forEach(function (node) {
      node.classList.toggle('selected', node.dataset.id === id);
    });
    try {
      var data = await api('GET', '/console/api/conversations/' + id);
      state.data = data;
      render(data);
      live(id, data.last_event_seq);
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  document.addEventListener('DOMContentLoaded', async function () {
    var hash = location.hash.replace(/^#/, '').split('/');
    if (['unassigned', 'mine', 'team', 'all'].indexOf(hash[0]) >= 0) state.view = hash[0];
    document.querySelectorAll('.views button').forEach(function (button) {
      button.addEventListener('click', function () {
        state.view = button.dataset.view;
        history.replaceState(null, '', '#' + state.view + (state.selected ? '/' + state.selected : ''));
        loadQueue();
      });
    });
    document.getElementById('filter-channel').addEventListener('change', loadQueue);
    document.getElementById('filter-language').addEventListener('change', loadQueue);
    var view = await loadQueue();
    follow(view ? view.now_ms : Date.now());
    if (hash[1]) select(hash[1]);
  });
})();
