// Contacts: search by name, email or channel id; one contact's identities, emails, orders,
// tasks and conversations; merge another contact into it (their histories then show
// together, and the workflow treats both contacts' emails as this customer's).
(function () {
  'use strict';
  var el = SB.el, api = SB.api, clear = SB.clear;
  var shown = null;

  async function search(event) {
    if (event) event.preventDefault();
    var query = document.getElementById('contact-query').value.trim();
    if (!query) return;
    try {
      var found = await api('GET', '/console/api/contacts?q=' + encodeURIComponent(query));
      var list = clear(document.getElementById('contact-results'));
      if (!found.data.length) list.appendChild(el('li', { class: 'empty' }, 'No contact found.'));
      found.data.forEach(function (contact) {
        var label = (contact.name || 'Customer') + ' · ' + contact.identities.map(function (i) { return i.channel + ':' + i.platform_user_id; }).concat(contact.emails).join(', ');
        list.appendChild(el('li', { 'data-id': contact.id, class: 'contact-item' },
          el('button', { type: 'button', class: 'link', onclick: function () { show(contact.id); } }, label),
          shown && shown !== contact.id ? el('button', { type: 'button', class: 'merge', onclick: function () { merge(contact.id); } }, 'Merge into the shown contact') : null));
      });
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  async function merge(otherId) {
    if (!shown) return;
    try {
      var contact = await api('POST', '/console/api/contacts/' + shown + '/merge', { other_id: otherId });
      render(contact);
      SB.notice('Contacts merged');
      search();
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  function render(contact) {
    shown = contact.id;
    var pane = clear(document.getElementById('contact-detail'));
    pane.dataset.id = contact.id;
    pane.appendChild(el('h2', {}, contact.name || 'Customer'));
    pane.appendChild(el('h3', {}, 'Identities'));
    pane.appendChild(el('ul', { id: 'contact-identities' }, contact.identities.map(function (i) {
      return el('li', {}, i.channel + ': ' + i.platform_user_id + (i.username ? ' (@' + i.username + ')' : '') + (i.verified ? ' ✓' : ''));
    }).concat(contact.emails.map(function (e) { return el('li', {}, 'email: ' + e); }))));
    // Where replies cannot reach the customer (they blocked the bot): given up until they write.
    if (contact.unreachable.length) {
      pane.appendChild(el('h3', {}, 'Unreachable'));
      pane.appendChild(el('ul', { id: 'contact-unreachable' }, contact.unreachable.map(function (u) {
        return el('li', {}, u.channel + ': ' + u.thread + ' since ' + SB.time(u.since_ms) + ' · ' + u.reason);
      })));
    }
    var orders = Array.isArray(contact.orders) ? contact.orders : [];
    pane.appendChild(el('h3', {}, 'Orders'));
    pane.appendChild(el('ul', {}, orders.map(function (o) { return el('li', {}, o.id + ' · ' + o.status); })));
    var tasks = Array.isArray(contact.tasks) ? contact.tasks : [];
    pane.appendChild(el('h3', {}, 'Tasks'));
    pane.appendChild(el('ul', {}, tasks.map(function (t) { return el('li', {}, t.type + ' · ' + t.status); })));
    pane.appendChild(el('h3', {}, 'Conversations'));
    pane.appendChild(el('ul', { id: 'contact-conversations' }, contact.conversations.map(function (c) {
      return el('li', {}, el('a', { href: '/console/queue#all/' + c.id }, c.channel + ' · ' + c.status + ' · ' + SB.time(c.created_at_ms)));
    })));
  }

  async function show(id) {
    try { render(await api('GET', '/console/api/contacts/' + id)); search(); } catch (error) { SB.notice(error.message, 'error'); }
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.getElementById('contact-search').addEventListener('submit', search);
  });
})();
