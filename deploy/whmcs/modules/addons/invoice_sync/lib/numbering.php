<?php
/**
 * invoice-sync addon: take an invoice's legal number from the coordinator and write it.
 *
 * One numbering routine, two transports, used by the addon module (hooks.php) and by the
 * standalone hook (includes/hooks/invoice_sync.php, which loads this file):
 *   - "coordinator": HTTPS straight to the coordinator with this system's agent token
 *     (TLS always verified; plain http only to a loopback address);
 *   - "sidecar": the local agent sidecar (`invoice-sync-agent serve`), which holds the token.
 * Every request carries the same (document, reference) for the same invoice, and the
 * coordinator answers a repeated reference with the number it already gave: retrying after a
 * timeout, a lost connection or a 503 never burns a second number.
 *
 * Fails closed: on any error the invoice stays unnumbered, the reason goes to WHMCS's activity
 * log (Utilities → Logs → Activity Log), and the next attempt (the other hook of the event, the
 * poller, or a retry by hand from the module's page) gets the same number.
 */

use WHMCS\Database\Capsule;

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

const INVOICE_SYNC_ADDON_MODULE = 'invoice_sync';
const INVOICE_SYNC_ADDON_TABLE = 'mod_invoice_sync';
const INVOICE_SYNC_ADDON_TOKEN_PREFIX = 'isg_';

/** A failure the admin can act on: its message goes to the activity log as it is. */
class InvoiceSyncAddonError extends RuntimeException
{
}

/**
 * Every setting with its default. "record" ('1'/'0'): keep each number in the module's table
 * mod_invoice_sync (and refuse numbers that went backwards against it); the standalone hook has
 * no such table and leaves that to the sidecar's journal.
 */
function invoice_sync_addon_defaults()
{
    return array(
        'transport' => 'coordinator',
        'coordinator_url' => '',
        'agent_token' => '',
        'sidecar' => 'http://127.0.0.1:8765',
        'number_on' => 'paid',
        'timeout' => '10',
        'attempts' => '3',
        'ca_bundle' => '',
        'record' => '1',
    );
}

/** Return the module's settings (as saved in System Settings → Addon Modules), with defaults. */
function invoice_sync_addon_settings()
{
    $stored = array();
    foreach (Capsule::table('tbladdonmodules')->where('module', INVOICE_SYNC_ADDON_MODULE)->get() as $row) {
        $row = (array) $row;
        $stored[$row['setting']] = (string) $row['value'];
    }
    unset($stored['record']); // not an admin's setting: the module always keeps its table
    $settings = array_merge(invoice_sync_addon_defaults(), array_filter($stored, 'strlen'));
    $settings['agent_token'] = invoice_sync_addon_plain_token($settings['agent_token']);
    return $settings;
}

/**
 * Return the agent token in clear. WHMCS versions that encrypt password-type settings at rest
 * hand them to _output() decrypted but leave them encrypted in tbladdonmodules, where hooks
 * read them; an agent token always starts with "isg_", so only a value without it is decrypted.
 */
function invoice_sync_addon_plain_token($value)
{
    $value = trim((string) $value);
    if ($value === '' || strpos($value, INVOICE_SYNC_ADDON_TOKEN_PREFIX) === 0) {
        return $value;
    }
    if (function_exists('decrypt')) {
        $plain = trim((string) decrypt($value));
        if (strpos($plain, INVOICE_SYNC_ADDON_TOKEN_PREFIX) === 0) {
            return $plain;
        }
    }
    return $value; // not an agent token: the coordinator will say so (HTTP 401), and we log it
}

/** Whether $host names this machine (plain http is allowed there only). */
function invoice_sync_addon_is_loopback($host)
{
    $host = trim(strtolower((string) $host), '[]');
    return $host === 'localhost' || $host === '::1' || preg_match('/^127\.\d+\.\d+\.\d+$/', $host) === 1;
}

/**
 * Send one JSON request through the configured transport, retrying what is safe to retry.
 *
 * Returns array(HTTP status, decoded body). Throws InvoiceSyncAddonError when no answer came
 * (after the retries) or the answer is not the coordinator's JSON.
 */
function invoice_sync_addon_request(array $settings, $method, $path, $body = null)
{
    $attempts = max(1, (int) $settings['attempts']);
    $last = '';
    for ($attempt = 1; $attempt <= $attempts; $attempt++) {
        if ($attempt > 1) {
            usleep((int) (min(4, 0.5 * pow(2, $attempt - 2)) * 1000000));
        }
        list($code, $answer, $error) = invoice_sync_addon_send($settings, $method, $path, $body);
        if ($error !== null) {
            $last = $error;
            continue; // no answer: connection refused, reset or timed out
        }
        if (in_array($code, array(429, 502, 503, 504), true)) {
            $last = invoice_sync_addon_describe($settings, $code, $answer);
            continue; // the coordinator asked us to come back (e.g. durability not confirmed)
        }
        return array($code, $answer);
    }
    throw new InvoiceSyncAddonError("no answer after $attempts attempt(s): $last");
}

/** One HTTP exchange: array(code, decoded JSON or null, transport error or null). */
function invoice_sync_addon_send(array $settings, $method, $path, $body)
{
    $headers = array('Accept: application/json');
    $ch = curl_init();
    if ($settings['transport'] === 'sidecar') {
        $base = $settings['sidecar'];
        if (strpos($base, 'unix:') === 0) {
            curl_setopt($ch, CURLOPT_UNIX_SOCKET_PATH, substr($base, 5));
            $base = 'http://localhost';
        }
        curl_setopt($ch, CURLOPT_PROXY, ''); // the sidecar is local: never through a proxy
    } else {
        $base = invoice_sync_addon_coordinator_url($settings);
        if ($settings['agent_token'] === '') {
            throw new InvoiceSyncAddonError('no agent token is set (System Settings → Addon Modules → invoice-sync)');
        }
        $headers[] = 'Authorization: Bearer ' . $settings['agent_token'];
        curl_setopt($ch, CURLOPT_SSL_VERIFYPEER, true);
        curl_setopt($ch, CURLOPT_SSL_VERIFYHOST, 2);
        if ($settings['ca_bundle'] !== '') {
            curl_setopt($ch, CURLOPT_CAINFO, $settings['ca_bundle']);
        }
    }
    if ($body !== null) {
        $headers[] = 'Content-Type: application/json';
        curl_setopt($ch, CURLOPT_POSTFIELDS, json_encode($body));
    }
    curl_setopt_array($ch, array(
        CURLOPT_URL => rtrim($base, '/') . $path,
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_HTTPHEADER => $headers,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => max(1, (int) $settings['timeout']),
        CURLOPT_CONNECTTIMEOUT => max(1, (int) $settings['timeout']),
        CURLOPT_FOLLOWLOCATION => false,
    ));
    $raw = curl_exec($ch);
    $code = (int) curl_getinfo($ch, CURLINFO_HTTP_CODE);
    $error = curl_error($ch);
    curl_close($ch);
    if ($raw === false) {
        return array(0, null, "unreachable ($error)");
    }
    $answer = json_decode($raw, true);
    return array($code, is_array($answer) ? $answer : null, null);
}

/** The coordinator's base URL, refused unless it is https (or http to this very machine). */
function invoice_sync_addon_coordinator_url(array $settings)
{
    $url = trim($settings['coordinator_url']);
    $parts = parse_url($url);
    if ($url === '' || $parts === false || !isset($parts['scheme'], $parts['host'])) {
        throw new InvoiceSyncAddonError('the coordinator URL is not set or not a URL (System Settings → Addon Modules → invoice-sync)');
    }
    if (isset($parts['user']) || isset($parts['pass'])) {
        throw new InvoiceSyncAddonError('the coordinator URL must not hold a user or password: the agent token is the credential');
    }
    $scheme = strtolower($parts['scheme']);
    if ($scheme !== 'https' && !($scheme === 'http' && invoice_sync_addon_is_loopback($parts['host']))) {
        throw new InvoiceSyncAddonError("the coordinator URL must start with https:// (got $scheme://): the agent token must not cross the network in clear");
    }
    return $url;
}

/**
 * Return what is wrong with the settings, one sentence each (empty: nothing). The hooks number
 * nothing while any is wrong, and the module's page lists them.
 */
function invoice_sync_addon_problems(array $settings)
{
    $problems = array();
    $choices = array('transport' => array('coordinator', 'sidecar'), 'number_on' => array('paid', 'created'));
    foreach ($choices as $name => $allowed) {
        if (!in_array($settings[$name], $allowed, true)) {
            $problems[] = "$name must be " . implode(' or ', $allowed) . " (is '{$settings[$name]}')";
        }
    }
    $ranges = array('timeout' => array(1, 300, 'seconds'), 'attempts' => array(1, 10, 'attempts'));
    foreach ($ranges as $name => $range) {
        $value = trim((string) $settings[$name]);
        if (!ctype_digit($value) || (int) $value < $range[0] || (int) $value > $range[1]) {
            $problems[] = "$name must be a whole number of {$range[2]} from {$range[0]} to {$range[1]} (is '$value')";
        }
    }
    if ($settings['transport'] === 'sidecar') {
        if (!preg_match('#^(unix:/.+|http://(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+/?)$#', $settings['sidecar'])) {
            $problems[] = "the sidecar address must be http://127.0.0.1:PORT or unix:/path (is '{$settings['sidecar']}')";
        }
        return $problems;
    }
    try {
        invoice_sync_addon_coordinator_url($settings);
    } catch (InvoiceSyncAddonError $e) {
        $problems[] = $e->getMessage();
    }
    if ($settings['agent_token'] === '') {
        $problems[] = 'no agent token is set';
    } elseif (strpos($settings['agent_token'], INVOICE_SYNC_ADDON_TOKEN_PREFIX) !== 0) {
        $problems[] = 'the agent token must be the system\'s agent token, which starts with ' . INVOICE_SYNC_ADDON_TOKEN_PREFIX;
    }
    if ($settings['ca_bundle'] !== '' && !is_readable($settings['ca_bundle'])) {
        $problems[] = "the CA bundle {$settings['ca_bundle']} cannot be read by PHP";
    }
    return $problems;
}

/** "HTTP 409: <the coordinator's message>" for the activity log. */
function invoice_sync_addon_describe(array $settings, $code, $answer)
{
    $message = is_array($answer) && isset($answer['message']) ? $answer['message'] : 'no JSON in the answer';
    if ($code === 401) {
        $where = $settings['transport'] === 'sidecar'
            ? "the sidecar's INVOICE_SYNC_AGENT_TOKEN (invoice-sync-agent serve)"
            : 'System Settings → Addon Modules → invoice-sync';
        return "HTTP 401: $message — the agent token was refused: set this system's agent token in $where";
    }
    return "HTTP $code: $message";
}

/** Call an endpoint that must answer one of $expected; return its JSON body. */
function invoice_sync_addon_call(array $settings, $method, $coordinatorPath, $sidecarPath, $body, array $expected)
{
    $path = $settings['transport'] === 'sidecar' ? $sidecarPath : $coordinatorPath;
    list($code, $answer) = invoice_sync_addon_request($settings, $method, $path, $body);
    if (!in_array($code, $expected, true) || !is_array($answer)) {
        throw new InvoiceSyncAddonError(invoice_sync_addon_describe($settings, $code, $answer));
    }
    return $answer;
}

function invoice_sync_addon_allocate(array $settings, array $request)
{
    $allocation = invoice_sync_addon_call($settings, 'POST', '/v1/allocations', '/allocate', $request, array(200, 201));
    foreach (array('id', 'formatted', 'number', 'sequence', 'period', 'reference') as $field) {
        if (!isset($allocation[$field]) || (string) $allocation[$field] === '') {
            throw new InvoiceSyncAddonError("the answer has no '$field': not an invoice-sync coordinator?");
        }
    }
    if ((string) $allocation['reference'] !== $request['reference']) {
        throw new InvoiceSyncAddonError("the answer is for reference '{$allocation['reference']}', not '{$request['reference']}'");
    }
    return $allocation;
}

function invoice_sync_addon_allocation_path($id, $suffix)
{
    return '/v1/allocations/' . rawurlencode($id) . $suffix;
}

function invoice_sync_addon_confirm(array $settings, array $allocation)
{
    $id = $allocation['id'];
    return invoice_sync_addon_call($settings, 'POST', invoice_sync_addon_allocation_path($id, '/confirm'), '/confirm',
        $settings['transport'] === 'sidecar'
            ? array('id' => $id, 'invoicenum' => $allocation['formatted'])
            : array('invoicenum' => $allocation['formatted']),
        array(200));
}

function invoice_sync_addon_void(array $settings, array $allocation, $reason)
{
    $id = $allocation['id'];
    return invoice_sync_addon_call($settings, 'POST', invoice_sync_addon_allocation_path($id, '/void'), '/void',
        $settings['transport'] === 'sidecar' ? array('id' => $id, 'reason' => $reason) : array('reason' => $reason),
        array(200));
}

/** Record (or update) what happened to an invoice's number in the module's own table. */
function invoice_sync_addon_record(array $settings, $invoiceId, array $allocation, $status, $message = '')
{
    if ($settings['record'] !== '1') {
        return;
    }
    $now = gmdate('Y-m-d H:i:s');
    $row = array(
        'allocation_id' => (string) $allocation['id'],
        'sequence' => (string) $allocation['sequence'],
        'period' => (string) $allocation['period'],
        'number' => (int) $allocation['number'],
        'formatted' => (string) $allocation['formatted'],
        'status' => $status,
        'message' => substr((string) $message, 0, 250),
        'updated_at' => $now,
    );
    $table = Capsule::table(INVOICE_SYNC_ADDON_TABLE);
    if ($table->where('invoiceid', $invoiceId)->where('allocation_id', $row['allocation_id'])->exists()) {
        Capsule::table(INVOICE_SYNC_ADDON_TABLE)->where('invoiceid', $invoiceId)
            ->where('allocation_id', $row['allocation_id'])->update($row);
    } else {
        Capsule::table(INVOICE_SYNC_ADDON_TABLE)->insert(array_merge($row, array(
            'invoiceid' => $invoiceId, 'created_at' => $now,
        )));
    }
}

/**
 * Refuse a number that went backwards: this installation already received a higher (or the
 * same) number of the same sequence and period for another invoice. That happens only when the
 * coordinator's data is behind reality (an old backup restored), so writing it would print a
 * number twice.
 */
function invoice_sync_addon_check_forward(array $settings, $invoiceId, array $allocation)
{
    if ($settings['record'] !== '1') {
        return; // the sidecar checks against its own journal and answers 409
    }
    $highest = Capsule::table(INVOICE_SYNC_ADDON_TABLE)
        ->where('sequence', (string) $allocation['sequence'])
        ->where('period', (string) $allocation['period'])
        ->where('invoiceid', '!=', $invoiceId)
        ->max('number');
    if ($highest !== null && (int) $allocation['number'] <= (int) $highest) {
        throw new InvoiceSyncAddonError(sprintf(
            'the coordinator answered %s (number %d), but this installation already received number %d of %s %s for another invoice: the coordinator\'s data may be behind (restored from an old backup?). Not written; see the invoice-sync recovery guide',
            $allocation['formatted'], (int) $allocation['number'], (int) $highest,
            $allocation['sequence'], $allocation['period']));
    }
}

/** Number one WHMCS invoice, if it has no number yet. Never throws: failures are logged. */
function invoice_sync_addon_number($invoiceId, array $settings = null)
{
    $invoiceId = (int) $invoiceId;
    $step = 'reading the invoice';
    $allocation = null;
    try {
        $settings = $settings === null ? invoice_sync_addon_settings() : $settings;
        $problems = invoice_sync_addon_problems($settings);
        if ($problems) {
            $step = 'checking the settings';
            throw new InvoiceSyncAddonError(implode('; ', $problems));
        }
        $invoice = localAPI('GetInvoice', array('invoiceid' => $invoiceId));
        if (!isset($invoice['result']) || $invoice['result'] !== 'success') {
            throw new InvoiceSyncAddonError(isset($invoice['message']) ? $invoice['message'] : 'GetInvoice failed');
        }
        $current = trim((string) $invoice['invoicenum']);
        if ($current !== '') {
            // Numbered already (by us, the poller, or an admin): never renumber. If it is our
            // number and its confirmation failed before, confirm it now.
            $step = "confirming $current";
            invoice_sync_addon_finish_written($settings, $invoiceId, $current);
            return;
        }
        // Credit notes are invoices with a negative total (modules that add them do so).
        $request = array(
            'document' => ((float) $invoice['total'] < 0) ? 'credit_note' : 'invoice',
            'reference' => (string) $invoiceId,
        );
        $date = substr((string) $invoice['date'], 0, 10);
        if (preg_match('/^\d{4}-\d{2}-\d{2}$/', $date) && $date !== '0000-00-00') {
            $request['date'] = $date; // the document date picks the numbering period
        }

        $step = 'taking a number';
        $allocation = invoice_sync_addon_allocate($settings, $request);
        $number = (string) $allocation['formatted'];
        invoice_sync_addon_check_forward($settings, $invoiceId, $allocation);
        invoice_sync_addon_record($settings, $invoiceId, $allocation, 'issued');

        $step = "writing $number";
        // Only into an unnumbered invoice: the poller or an admin may have been faster.
        Capsule::table('tblinvoices')->where('id', $invoiceId)->where('invoicenum', '')
            ->update(array('invoicenum' => $number));
        $written = (string) Capsule::table('tblinvoices')->where('id', $invoiceId)->value('invoicenum');
        if ($written !== $number) {
            $step = "voiding $number";
            $reason = "invoice $invoiceId was numbered '$written' by someone else";
            invoice_sync_addon_void($settings, $allocation, $reason);
            invoice_sync_addon_record($settings, $invoiceId, $allocation, 'void', $reason);
            logActivity("invoice-sync: invoice $invoiceId already had number '$written'; voided $number");
            return;
        }

        $step = "confirming $number";
        invoice_sync_addon_confirm($settings, $allocation);
        invoice_sync_addon_record($settings, $invoiceId, $allocation, 'confirmed');
    } catch (Throwable $e) {
        $message = "invoice-sync: invoice $invoiceId, $step failed: " . $e->getMessage()
            . ' (left as it is; the next attempt gets the same number)';
        if ($allocation !== null) {
            try {
                invoice_sync_addon_record($settings, $invoiceId, $allocation, 'failed', $e->getMessage());
            } catch (Throwable $ignored) {
                // the activity log below still says what happened
            }
        }
        logActivity($message);
    }
}

/** The module's numbers of invoice $invoiceId taken but not yet confirmed or voided. */
function invoice_sync_addon_pending($invoiceId = null, $limit = 50)
{
    $query = Capsule::table(INVOICE_SYNC_ADDON_TABLE)->where('status', '!=', 'confirmed')
        ->where('status', '!=', 'void');
    if ($invoiceId !== null) {
        $query = $query->where('invoiceid', (int) $invoiceId);
    }
    return $query->orderBy('id', 'asc')->limit($limit)->get();
}

/** The allocation a row of the module's table stands for. */
function invoice_sync_addon_row_allocation($row)
{
    $row = (array) $row;
    return array('id' => $row['allocation_id'], 'formatted' => $row['formatted'], 'number' => $row['number'],
        'sequence' => $row['sequence'], 'period' => $row['period']);
}

/**
 * Confirm our number of an invoice that shows it but whose confirmation failed earlier (the
 * coordinator was down after the write). Without this the coordinator would list it as issued
 * and unconfirmed for ever: every later hook run finds the invoice numbered and stops.
 */
function invoice_sync_addon_finish_written(array $settings, $invoiceId, $invoicenum)
{
    if ($settings['record'] !== '1') {
        return; // the sidecar's journal and the agent's poller finish these
    }
    foreach (invoice_sync_addon_pending($invoiceId) as $row) {
        if ((string) $row->formatted === $invoicenum) {
            $allocation = invoice_sync_addon_row_allocation($row);
            invoice_sync_addon_confirm($settings, $allocation);
            invoice_sync_addon_record($settings, $invoiceId, $allocation, 'confirmed');
        }
    }
}

/**
 * Finish the numbers this installation took and did not confirm (WHMCS's cron, or the module's
 * page): confirm what the invoice shows, number again (the same number) what is still
 * unnumbered, void what another number replaced. Returns how many were finished; a failure is
 * logged once per reason and left for the next run.
 */
function invoice_sync_addon_finish_pending(array $settings, $limit = 50)
{
    if ($settings['record'] !== '1' || invoice_sync_addon_problems($settings)) {
        return 0;
    }
    $finished = 0;
    foreach (invoice_sync_addon_pending(null, $limit) as $row) {
        $invoiceId = (int) $row->invoiceid;
        $allocation = invoice_sync_addon_row_allocation($row);
        try {
            $invoice = localAPI('GetInvoice', array('invoiceid' => $invoiceId));
            if (!isset($invoice['result']) || $invoice['result'] !== 'success') {
                throw new InvoiceSyncAddonError('GetInvoice: ' . (isset($invoice['message']) ? $invoice['message'] : 'failed')
                    . '; an admin decides (void it in the coordinator with the reason, or restore the invoice)');
            }
            $current = trim((string) $invoice['invoicenum']);
            if ($current === '') {
                invoice_sync_addon_number($invoiceId, $settings); // the same number, written now
            } elseif ($current === (string) $row->formatted) {
                invoice_sync_addon_confirm($settings, $allocation);
                invoice_sync_addon_record($settings, $invoiceId, $allocation, 'confirmed');
            } else {
                $reason = "invoice $invoiceId was numbered '$current' by someone else";
                invoice_sync_addon_void($settings, $allocation, $reason);
                invoice_sync_addon_record($settings, $invoiceId, $allocation, 'void', $reason);
            }
            $finished++;
        } catch (Throwable $e) {
            if (substr($e->getMessage(), 0, 250) !== (string) $row->message) {
                logActivity("invoice-sync: invoice $invoiceId, finishing {$row->formatted} failed: "
                    . $e->getMessage() . ' (tried again with the next cron run)');
            }
            invoice_sync_addon_record($settings, $invoiceId, $allocation, (string) $row->status, $e->getMessage());
        }
    }
    return $finished;
}

/** The two hooks of the event that numbers: *PreEmail before the PDF is mailed, the other also
 * when no email goes out (the second call finds the number and does nothing). */
function invoice_sync_addon_events($numberOn)
{
    return $numberOn === 'created'
        ? array('InvoiceCreationPreEmail', 'InvoiceCreated')
        : array('InvoicePaidPreEmail', 'InvoicePaid');
}

/** Register the numbering hooks with these settings (the module's, or the standalone hook's). */
function invoice_sync_addon_add_hooks(array $settings)
{
    foreach (invoice_sync_addon_events($settings['number_on']) as $event) {
        add_hook($event, 1, function ($vars) use ($settings) {
            invoice_sync_addon_number($vars['invoiceid'], $settings);
        });
    }
    if ($settings['record'] === '1') {
        // WHMCS's cron (every few minutes): finish what a failure left unconfirmed.
        add_hook('AfterCronJob', 1, function ($vars) use ($settings) {
            invoice_sync_addon_finish_pending($settings);
        });
    }
}
