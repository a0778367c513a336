// Admin: people (add, change role and teams, disable, sign out everywhere), teams (rule,
// restriction, business hours), API keys (create, shown once; revoke), canned replies, and
// the channels' status.
(function () {
  'use strict';
  var el = SB.el, api = SB.api, clear = SB.clear;

  function list(text) {
    return (text || '').split(/[ ,]+/).map(function (s) { return s.trim(); }).filter(Boolean);
  }

  function table(id, headers, rows) {
    var node = clear(document.getElementById(id));
    node.appendChild(el('tr', {}, headers.map(function (h) { return el('th', {}, h); })));
    rows.forEach(function (cells) { node.appendChild(el('tr', {}, cells.map(function (c) { return el('td', {}, c); }))); });
  }

  function button(label, run) {
    return el('button', { type: 'button', onclick: async function () {
      try { await run(); await load(); } catch (error) { SB.notice(error.message, 'error'); }
    } }, label);
  }

  async function load() {
    try {
      var users = await api('GET', '/console/api/admin/users');
      table('users', ['Email', 'Name', 'Role', 'Roles', 'Teams', 'Availability', ''], users.data.map(function (u) {
        return [u.email, u.name, u.role, u.roles.join(' '), u.teams.join(' '), u.disabled ? 'disabled' : u.availability,
          el('span', {},
            button(u.disabled ? 'Enable' : 'Disable', function () { return api('PATCH', '/console/api/admin/users/' + u.id, { disabled: !u.disabled }); }),
            button('Sign out everywhere', function () { return api('POST', '/console/api/admin/users/' + u.id + '/sign-out'); }))];
      }));
      var teams = await api('GET', '/console/api/admin/teams');
      table('teams', ['Team', 'Assignment', 'Restricted', 'Hours', 'Out of hours', 'Open now', 'Members'], teams.data.map(function (t) {
        return [t.name, t.assignment, t.restricted ? 'yes' : 'no', JSON.stringify(t.hours), t.out_of_hours, t.open_now ? 'open' : 'closed', String(t.members.length)];
      }));
      var keys = await api('GET', '/console/api/admin/api-keys');
      table('api-keys', ['Name', 'Scopes', 'Roles', 'Created', ''], keys.data.map(function (k) {
        return [k.name, k.scopes.join(' '), k.roles.join(' '), SB.time(k.created_at_ms),
          k.revoked_at_ms ? 'revoked' : button('Revoke', function () { return api('DELETE', '/console/api/admin/api-keys/' + k.id); })];
      }));
      var canned = await api('GET', '/console/api/canned');
      table('canned', ['Shortcut', 'Title', 'Body', ''], canned.data.map(function (c) {
        return ['/' + c.shortcut, c.title, c.body, button('Delete', function () { return api('DELETE', '/console/api/admin/canned/' + c.id); })];
      }));
      var channels = await api('GET', '/console/api/admin/channels');
      table('channels', ['Kind', 'Name', 'State', 'Last error', 'Restarts'], channels.data.map(function (c) {
        return [c.kind, c.name, c.state, c.last_error || '', String(c.restarts)];
      }));
    } catch (error) { SB.notice(error.message, 'error'); }
  }

  function form(id, submit) {
    document.getElementById(id).addEventListener('submit', async function (event) {
      event.preventDefault();
      var data = new FormData(event.target);
      try { await submit(data); event.target.reset(); await load(); } catch (error) { SB.notice(error.message, 'error'); }
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    form('new-user', function (data) {
      return api('POST', '/console/api/admin/users', {
        email: data.get('email'), name: data.get('name'), password: data.get('password'), role: data.get('role'),
        roles: list(data.get('roles')), teams: list(data.get('teams')),
      });
    });
    form('team-form', function (data) {
      var hours = (data.get('hours') || '').trim();
      return api('PUT', '/console/api/admin/teams/' + encodeURIComponent(data.get('name')), {
        assignment: data.get('assignment'), restricted: data.get('restricted') === 'on',
        hours: hours ? JSON.parse(hours) : {}, out_of_hours: data.get('out_of_hours'),
      });
    });
    form('new-key', async function (data) {
      var key = await api('POST', '/console/api/admin/api-keys', { name: data.get('name'), scopes: list(data.get('scopes')), roles: list(data.get('roles')) });
      document.getElementById('new-key-secret').textContent = 'New key (shown once): ' + key.key;
    });
    form('new-canned', function (data) {
      return api('POST', '/console/api/admin/canned', { shortcut: data.get('shortcut'), title: data.get('title'), body: data.get('body') });
    });
    load();
  });
})();
