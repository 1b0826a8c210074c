<?php
/**
 * invoice-sync — give this WHMCS's invoices their legal number from the central coordinator.
 *
 * A WHMCS addon module (developers.whmcs.com → Addon Modules): copy the folder to
 * <whmcs>/modules/addons/invoice_sync/, then System Settings → Addon Modules → invoice-sync →
 * Activate, and fill in its settings. Its page (Addons → invoice-sync) shows whether the
 * coordinator answers, which system the token belongs to, and the latest numbers.
 */

use WHMCS\Database\Capsule;

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

require_once __DIR__ . '/lib/numbering.php';

function invoice_sync_config()
{
    return array(
        'name' => 'invoice-sync',
        'description' => 'One legally sound invoice and credit-note numbering across many WHMCS installations: '
            . 'numbers come from the invoice-sync coordinator. Turn off WHMCS\'s own "Sequential Paid Invoice Numbering".',
        'author' => 'invoice-sync',
        'language' => 'english',
        'version' => '1.0',
        'fields' => array(
            'coordinator_url' => array(
                'FriendlyName' => 'Coordinator URL',
                'Type' => 'text',
                'Size' => '60',
                'Default' => '',
                'Description' => 'e.g. https://numbers.example.com (https only; plain http only to 127.0.0.1)',
            ),
            'agent_token' => array(
                'FriendlyName' => 'Agent token',
                'Type' => 'password',
                'Size' => '60',
                'Default' => '',
                'Description' => 'This system\'s agent token (isg_…), shown once when the system was registered or its token rotated',
            ),
            'number_on' => array(
                'FriendlyName' => 'Number invoices',
                'Type' => 'dropdown',
                'Options' => array('paid' => 'when paid (proforma mode)', 'created' => 'when created'),
                'Default' => 'paid',
                'Description' => 'Match WHMCS: "paid" if you use proforma invoicing',
            ),
            'timeout' => array(
                'FriendlyName' => 'Timeout (seconds)',
                'Type' => 'text',
                'Size' => '5',
                'Default' => '10',
                'Description' => 'per request to the coordinator',
            ),
            'attempts' => array(
                'FriendlyName' => 'Attempts',
                'Type' => 'text',
                'Size' => '5',
                'Default' => '3',
                'Description' => 'tries on a timeout, a lost connection or HTTP 503 (always the same number)',
            ),
            'ca_bundle' => array(
                'FriendlyName' => 'CA bundle',
                'Type' => 'text',
                'Size' => '60',
                'Default' => '',
                'Description' => 'path of a PEM file to verify the coordinator\'s certificate (empty: the system\'s CAs)',
            ),
            'transport' => array(
                'FriendlyName' => 'Transport',
                'Type' => 'dropdown',
                'Options' => array('coordinator' => 'coordinator, directly (HTTPS)', 'sidecar' => 'local agent sidecar'),
                'Default' => 'coordinator',
                'Description' => 'the sidecar keeps the token out of WHMCS; it needs invoice-sync-agent serve on this host',
            ),
            'sidecar' => array(
                'FriendlyName' => 'Sidecar address',
                'Type' => 'text',
                'Size' => '40',
                'Default' => 'http://127.0.0.1:8765',
                'Description' => 'only with the sidecar transport; or unix:/run/invoice-sync/agent.sock',
            ),
        ),
    );
}

/** Create the module's table unless it exists (activate and upgrade; never drops anything). */
function invoice_sync_ensure_table()
{
    if (!Capsule::schema()->hasTable(INVOICE_SYNC_ADDON_TABLE)) {
            Capsule::schema()->create(INVOICE_SYNC_ADDON_TABLE, function ($table) {
                $table->increments('id');
                $table->integer('invoiceid')->index();
                $table->string('allocation_id', 200);
                $table->string('sequence', 32);
                $table->string('period', 16);
                $table->bigInteger('number');
                $table->string('formatted', 128);
                $table->string('status', 16)->index();
                $table->string('message', 255)->default('');
                $table->dateTime('created_at');
                $table->dateTime('updated_at');
            });
    }
}

function invoice_sync_activate()
{
    try {
        invoice_sync_ensure_table();
        return array(
            'status' => 'success',
            'description' => 'invoice-sync is active. Fill in the coordinator URL and the agent token under '
                . 'Configure, give your admin role access, and open Addons → invoice-sync to check the connection.',
        );
    } catch (Throwable $e) {
        return array('status' => 'error', 'description' => 'Could not create ' . INVOICE_SYNC_ADDON_TABLE . ': ' . $e->getMessage());
    }
}

function invoice_sync_deactivate()
{
    // The table is kept: it is this installation's record of the numbers it received.
    return array(
        'status' => 'success',
        'description' => 'invoice-sync is deactivated: invoices are no longer numbered by it. '
            . 'The table ' . INVOICE_SYNC_ADDON_TABLE . ' is kept.',
    );
}

/**
 * WHMCS calls this when the files of a newer version replace older ones ($vars['version'] is
 * the version that was active). Every number recorded so far is kept; a table lost meanwhile
 * is created again. Later versions add their migrations here, keyed on $vars['version'].
 */
function invoice_sync_upgrade($vars)
{
    invoice_sync_ensure_table();
}

function invoice_sync_h($value)
{
    return htmlspecialchars((string) $value, ENT_QUOTES, 'UTF-8');
}

/** The URL as the page shows it: a user or password in it (refused anyway) is never shown. */
function invoice_sync_shown_url($url)
{
    return preg_replace('#^([a-z][a-z0-9+.-]*://)[^/@]*@#i', '$1***@', (string) $url);
}

/** The module's page: the coordinator's reachability, the token's system, the latest numbers. */
function invoice_sync_output($vars)
{
    $settings = invoice_sync_addon_settings();
    if (isset($_POST['finish'])) {
        // A change, so a POST with the admin session's CSRF token: a link or image elsewhere
        // cannot make a logged-in admin's browser run it. check_token() stops the request.
        check_token('WHMCS.admin.default');
        $finished = invoice_sync_addon_finish_pending($settings);
        echo '<div class="alert alert-info">Finished ' . (int) $finished . ' number(s); the activity log has any failure.</div>';
    }
    echo '<h2>Connection</h2><table class="table table-condensed">';
    echo '<tr><th>Transport</th><td>' . invoice_sync_h($settings['transport']) . '</td></tr>';
    echo '<tr><th>Coordinator URL</th><td>' . invoice_sync_h(invoice_sync_shown_url($settings['coordinator_url'])) . '</td></tr>';
    echo '<tr><th>Numbers invoices</th><td>' . ($settings['number_on'] === 'created' ? 'when created' : 'when paid') . '</td></tr>';
    $problems = invoice_sync_addon_problems($settings);
    $checks = array('Settings' => array(!$problems, $problems
        ? implode('; ', $problems) . ' — no invoice is numbered until this is fixed (Configure)'
        : 'complete'));
    foreach ($checks + invoice_sync_addon_checks($settings) as $label => $check) {
        list($ok, $text) = $check;
        echo '<tr><th>' . invoice_sync_h($label) . '</th><td><span class="label label-'
            . ($ok ? 'success">OK' : 'danger">Problem') . '</span> ' . invoice_sync_h($text) . '</td></tr>';
    }
    echo '</table>';
    if (function_exists('invoice_sync_number')) {
        echo '<div class="alert alert-warning">The standalone hook includes/hooks/invoice_sync.php is also installed: '
            . 'remove it, this module replaces it.</div>';
    }

    $pending = Capsule::table(INVOICE_SYNC_ADDON_TABLE)->where('status', '!=', 'confirmed')
        ->where('status', '!=', 'void')->orderBy('id', 'desc')->limit(100)->get();
    echo '<h2>Not confirmed (' . count($pending) . ')</h2>';
    invoice_sync_addon_table($pending, 'Every number here was taken for an invoice but not confirmed as written. '
        . 'WHMCS\'s cron finishes it (the same number, never another); the activity log has the reason.');
    if (count($pending)) {
        echo '<form method="post" action="' . invoice_sync_h($vars['modulelink']) . '">'
            . generate_token('form') . '<input type="hidden" name="finish" value="1" />'
            . '<button type="submit" class="btn btn-default">Finish them now</button></form>';
    }
    echo '<h2>Latest numbers</h2>';
    invoice_sync_addon_table(Capsule::table(INVOICE_SYNC_ADDON_TABLE)->orderBy('id', 'desc')->limit(25)->get(), '');
}

/** Label => array(ok, text) for the page: is the coordinator up, ready, and is the token valid. */
function invoice_sync_addon_checks(array $settings)
{
    $checks = array();
    if ($settings['transport'] === 'sidecar') {
        try {
            list($code, $answer) = invoice_sync_addon_request(array_merge($settings, array('attempts' => 1)), 'GET', '/health');
            $checks['Sidecar'] = array($code === 200, "HTTP $code " . json_encode($answer));
        } catch (Throwable $e) {
            $checks['Sidecar'] = array(false, $e->getMessage());
        }
        return $checks;
    }
    $once = array_merge($settings, array('attempts' => 1));
    try {
        list($code, $answer) = invoice_sync_addon_request($once, 'GET', '/readyz');
        $status = is_array($answer) && isset($answer['status']) ? $answer['status'] : 'no JSON';
        $checks['Coordinator'] = array($code === 200, "reachable, /readyz answered HTTP $code ($status)");
        list($code, $answer) = invoice_sync_addon_request($once, 'GET', '/v1/whoami');
        if ($code === 200 && is_array($answer) && isset($answer['kind']) && $answer['kind'] === 'agent') {
            $checks['Agent token'] = array(true, 'valid, for system "' . $answer['system'] . '"');
        } elseif ($code === 200) {
            $checks['Agent token'] = array(false, 'this is not an agent token (kind: ' . json_encode($answer) . '): use the system\'s agent token');
        } else {
            $checks['Agent token'] = array(false, invoice_sync_addon_describe($settings, $code, $answer));
        }
    } catch (Throwable $e) {
        $checks['Coordinator'] = array(false, $e->getMessage());
    }
    return $checks;
}

function invoice_sync_addon_table($rows, $note)
{
    if ($note !== '') {
        echo '<p>' . invoice_sync_h($note) . '</p>';
    }
    echo '<table class="table table-striped"><tr><th>Invoice</th><th>Number</th><th>Status</th>'
        . '<th>Coordinator id</th><th>Updated (UTC)</th><th>Message</th></tr>';
    foreach ($rows as $row) {
        $row = (array) $row;
        echo '<tr><td><a href="invoices.php?action=edit&amp;id=' . (int) $row['invoiceid'] . '">'
            . (int) $row['invoiceid'] . '</a></td><td>' . invoice_sync_h($row['formatted']) . '</td><td>'
            . invoice_sync_h($row['status']) . '</td><td>' . invoice_sync_h($row['allocation_id']) . '</td><td>'
            . invoice_sync_h($row['updated_at']) . '</td><td>' . invoice_sync_h($row['message']) . '</td></tr>';
    }
    echo '</table>';
}
